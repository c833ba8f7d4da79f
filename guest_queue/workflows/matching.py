"""Finding the knowledge-base entry closest to a question: TF-IDF over words and word pairs.

Vietnamese is matched without accents (guests often type without them), with
the accented spelling as an extra feature so "bán" (sell) still beats "bạn" (you)
when the guest did type accents.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise

WORD = re.compile(r"\w+", re.UNICODE)
VIETNAMESE_LETTERS = frozenset(
    "ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ"
)
STOPWORDS = {
    "en": frozenset(
        [
            "a",
            "an",
            "the",
            "is",
            "are",
            "was",
            "be",
            "been",
            "am",
            "do",
            "does",
            "did",
            "i",
            "my",
            "me",
            "we",
            "our",
            "you",
            "your",
            "it",
            "its",
            "to",
            "of",
            "in",
            "on",
            "at",
            "for",
            "and",
            "or",
            "with",
            "about",
            "this",
            "that",
            "these",
            "those",
            "there",
            "can",
            "could",
            "will",
            "would",
            "should",
            "what",
            "which",
            "who",
            "whom",
            "how",
            "why",
            "when",
            "where",
            "if",
            "any",
            "some",
            "please",
            "tell",
            "know",
            "want",
            "get",
        ]
    ),
    "vi": frozenset(
        [
            "là",
            "gì",
            "có",
            "không",
            "tôi",
            "của",
            "bạn",
            "các",
            "những",
            "được",
            "cho",
            "và",
            "thì",
            "nào",
            "như",
            "thế",
            "ở",
            "một",
            "với",
            "để",
            "về",
            "nếu",
            "sao",
            "mình",
            "em",
            "ạ",
            "vậy",
            "này",
            "đó",
            "hay",
            "hãy",
            "xin",
            "cần",
            "muốn",
            "biết",
            "hỏi",
            "làm",
        ]
    ),
}
# Words that mark unaccented Vietnamese ("xet nghiem gen la gi").
VIETNAMESE_HINTS = frozenset(
    [
        "la",
        "gi",
        "khong",
        "toi",
        "cua",
        "duoc",
        "nhu",
        "nao",
        "bao",
        "nhieu",
        "xet",
        "nghiem",
        "mau",
        "ket",
        "qua",
        "lay",
        "nuoc",
        "bot",
    ]
)


def fold(text: str) -> str:
    """Lower-case and strip accents; đ becomes d."""
    decomposed = unicodedata.normalize("NFD", text.lower().replace("đ", "d"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def detect_language(text: str) -> str:
    """``vi`` for Vietnamese, with or without accents; ``en`` otherwise."""
    lowered = unicodedata.normalize("NFC", text.lower())
    if any(c in VIETNAMESE_LETTERS for c in lowered):
        return "vi"
    words = WORD.findall(lowered)
    hints = sum(1 for w in words if w in VIETNAMESE_HINTS)
    return "vi" if words and hints >= max(2, len(words) // 3) else "en"


def features(text: str, language: str) -> list[str]:
    """Words (accent-folded), accented spellings and adjacent word pairs of ``text``."""
    stop = STOPWORDS.get(language, frozenset())
    stop_folded = {fold(w) for w in stop}
    words = WORD.findall(unicodedata.normalize("NFC", text.lower()))
    kept: list[str] = []
    for word in words:
        folded = fold(word)
        is_stop = word in stop if folded != word else folded in stop_folded
        if not is_stop:
            kept.append(word)
    out = [fold(w) for w in kept]
    out += ["~" + w for w in kept if fold(w) != w]
    out += [f"{fold(a)}_{fold(b)}" for a, b in pairwise(kept)]
    return out


class Index:
    """A TF-IDF index of documents; ``best`` returns the closest one and its cosine score."""

    def __init__(self, documents: Sequence[Iterable[str]]) -> None:
        counts = [Counter(doc) for doc in documents]
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        n = len(counts)
        self._idf = {term: math.log((1 + n) / (1 + d)) + 1 for term, d in df.items()}
        self._vectors = [self._weigh(c) for c in counts]

    def _weigh(self, counts: Counter[str]) -> dict[str, float]:
        vec = {t: (1 + math.log(k)) * self._idf.get(t, 0.0) for t, k in counts.items()}
        norm = math.sqrt(sum(w * w for w in vec.values())) or 1.0
        return {t: w / norm for t, w in vec.items() if w}

    def best(self, terms: Iterable[str]) -> tuple[int, float]:
        query = self._weigh(Counter(terms))
        best_index, best_score = -1, 0.0
        for i, vec in enumerate(self._vectors):
            score = sum(w * vec.get(t, 0.0) for t, w in query.items())
            if score > best_score:
                best_index, best_score = i, score
        return best_index, best_score
