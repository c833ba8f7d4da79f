"""Answers to common questions: the cache interface, question keys and near-duplicates.

The storage itself is pluggable (the Django layer stores answers in Django's
cache framework); this module decides what counts as "the same question".
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

# Everything that is not a letter, a digit or a combining mark separates words.
SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete, successful answer."""

    text: str
    suggested_questions: tuple[str, ...] = ()


class AnswerCache(Protocol):
    """Where answers are kept; both methods must not raise for a storage outage."""

    async def get(self, key: str) -> CachedAnswer | None: ...

    async def set(self, key: str, answer: CachedAnswer) -> None: ...


def question_key(question: str) -> str:
    """The cache key of a question: NFC, case-folded, punctuation and spaces collapsed.

    "What is GeneStory?" and "  what is genestory " share one key. Vietnamese
    keeps its accents (NFC, not stripped): "bán" (sell) and "bạn" (you) differ.
    """
    text = unicodedata.normalize("NFC", question).casefold()
    return " ".join(SEPARATORS.sub(" ", text).split())


class NearDuplicates:
    """Recently answered keys, for token-set matching of near-identical questions.

    Only keys this process has seen (answered or pre-warmed) can be matched:
    cache backends cannot be searched.
    """

    def __init__(self, threshold: float, size: int = 2000) -> None:
        self.threshold = threshold
        self.size = size
        self._keys: OrderedDict[str, frozenset[str]] = OrderedDict()

    def remember(self, key: str) -> None:
        self._keys[key] = frozenset(key.split())
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def match(self, key: str) -> str | None:
        """The most similar known key at or above the threshold (Jaccard over words)."""
        words = frozenset(key.split())
        best, best_score = None, 0.0
        for known, known_words in self._keys.items():
            union = len(words | known_words)
            score = len(words & known_words) / union if union else 0.0
            if score > best_score:
                best, best_score = known, score
        return best if best is not None and best_score >= self.threshold else None
