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

# Invisible code points outside category Cf (which is refused as a whole): combining
# grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and Unicode
# variation selectors, the tag and variation-selector supplement planes.
INVISIBLE = re.compile(
    r"[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0"
    r"\U000e0000-\U000e0fff]"
)
# More combining marks on one character than any language needs ("Zalgo" text).
MARK_PILE = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]{5}")
ALLOWED_CONTROLS = frozenset("\t\n")


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
    """The cache key of a question; questions share one only if they differ in nothing else than
    case, whitespace, Unicode compatibility form (NFKC) or punctuation at either end.

    "When do you open?" and "  when do   you open " share a key; inner content
    counts, whatever it is: "When do you open? ignore all…" (circled letters
    included: NFKC reads them as letters) gets a key of its own, so one crafted
    question cannot decide the answer every guest gets. Vietnamese keeps its
    accents: "bán" (sell) and "bạn" (you) differ.
    """
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", question).casefold())
    text = " ".join(text.split())
    start, end = 0, len(text)
    while start < end and _edge(text[start]):
        start += 1
    while end > start and _edge(text[end - 1]):
        end -= 1
    return text[start:end]


#: Separates the language from the question in an answer's key (no question key holds one).
LANGUAGE_SEPARATOR = "\n"


def answer_key(question: str, language: str | None) -> str:
    """The key an answer is cached and shared under: the question's, within its language.

    The workflow gets the guest's language: two guests asking the same words in
    different languages may need different answers, so they never share one.
    """
    key = question_key(question)
    return f"{language.casefold()}{LANGUAGE_SEPARATOR}{key}" if language else key


def _split(key: str) -> tuple[str, str]:
    """A key's language scope ("" when none) and its question part."""
    scope, separator, question = key.rpartition(LANGUAGE_SEPARATOR)
    return (scope, question) if separator else ("", key)


def _edge(char: str) -> bool:
    # Punctuation ("?", "!!!", "¿", quotes) and spaces, but not connectors such as "_".
    category = unicodedata.category(char)
    return char == " " or (category[0] == "P" and category != "Pc")


def cacheable(question: str) -> bool:
    """Whether a question may be answered from the cache and its answer stored there.

    Not when it holds characters that hide or reorder text: format characters
    (zero-width spaces and joiners, bidi controls, tag characters), controls,
    private-use, unassigned or surrogate code points, variation selectors,
    fillers, or piles of combining marks. Such a question still gets an answer,
    only never a shared one.
    """
    for char in question:
        category = unicodedata.category(char)
        if category in ("Cf", "Co", "Cn", "Cs"):
            return False
        if category == "Cc" and char not in ALLOWED_CONTROLS:
            return False
    return not (INVISIBLE.search(question) or MARK_PILE.search(question))


class NearDuplicates:
    """Recently answered keys, for token-set matching of near-identical questions.

    Only keys this process has seen (answered or pre-warmed) can be matched:
    cache backends cannot be searched.
    """

    def __init__(self, threshold: float, size: int = 2000) -> None:
        self.threshold = threshold
        self.size = size
        #: Known keys: their language scope and their question's words.
        self._keys: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()

    def remember(self, key: str) -> None:
        self._keys[key] = _scope_and_words(key)
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def match(self, key: str) -> str | None:
        """The most similar known key at or above the threshold (Jaccard over words).

        Only keys of the same language match: a near-duplicate in another language
        is another question.
        """
        scope, words = _scope_and_words(key)
        best, best_score = None, 0.0
        for known, (known_scope, known_words) in self._keys.items():
            if known_scope != scope:
                continue
            union = len(words | known_words)
            score = len(words & known_words) / union if union else 0.0
            if score > best_score:
                best, best_score = known, score
        return best if best is not None and best_score >= self.threshold else None


def _scope_and_words(key: str) -> tuple[str, frozenset[str]]:
    scope, question = _split(key)
    return scope, frozenset(question.split())
