"""The built-in workflow: an offline GeneStory guest assistant in English and Vietnamese.

It answers from a knowledge base shipped with the package and streams word by
word at an LLM-like pace, so the queue can be tried without any model server.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .base import WorkflowItem, WorkflowRequest
from .matching import Index, detect_language, features

#: Below this cosine score the assistant says it does not know.
MIN_SCORE = 0.22
SUGGESTIONS = 3
TOKEN = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Entry:
    topic: str
    questions: tuple[str, ...]
    keywords: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class KnowledgeBase:
    language: str
    entries: tuple[Entry, ...]
    fallback: str
    unanswerable_suggestions: tuple[str, ...]
    index: Index

    def match(self, question: str) -> tuple[Entry | None, float]:
        """The entry that best answers ``question``, or None when nothing is close enough."""
        i, score = self.index.best(features(question, self.language))
        return (self.entries[i] if i >= 0 and score >= MIN_SCORE else None), score

    def suggestions(self, entry: Entry | None) -> list[str]:
        """Three follow-up questions: same topic first, then the entries after it."""
        if entry is None:
            return list(self.unanswerable_suggestions[:SUGGESTIONS])
        start = self.entries.index(entry)
        ordered = self.entries[start + 1 :] + self.entries[:start]
        related = [e for e in ordered if e.topic == entry.topic]
        related += [e for e in ordered if e.topic != entry.topic]
        return [e.questions[0] for e in related[:SUGGESTIONS]]


def _document(entry: Entry, language: str) -> list[str]:
    terms: list[str] = []
    for question in entry.questions:
        terms += features(question, language) * 2
    for keyword in entry.keywords:
        terms += features(keyword, language)
    return terms


@cache
def knowledge_base(language: str) -> KnowledgeBase:
    """The shipped knowledge base for ``language`` (``en`` or ``vi``), loaded once."""
    raw: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath(f"knowledge/{language}.json").read_text("utf-8")
    )
    entries = tuple(
        Entry(e["topic"], tuple(e["questions"]), tuple(e["keywords"]), e["answer"])
        for e in raw["entries"]
    )
    return KnowledgeBase(
        language=language,
        entries=entries,
        fallback=raw["fallback"],
        unanswerable_suggestions=tuple(raw["unanswerable_suggestions"]),
        index=Index([_document(e, language) for e in entries]),
    )


class DemoWorkflow:
    """Answers common guest questions from the shipped knowledge base."""

    def __init__(self, token_delay: float | None = None) -> None:
        if token_delay is None:
            from ..conf import app_settings

            token_delay = float(app_settings.DEMO_TOKEN_DELAY_SEC)
        self.token_delay = token_delay

    def answer(self, question: str) -> tuple[str, list[str]]:
        """The answer text and follow-up questions for ``question``."""
        kb = knowledge_base(detect_language(question))
        entry, _ = kb.match(question)
        text = entry.answer if entry is not None else kb.fallback
        return text, kb.suggestions(entry)

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        """Stream the answer word by word, then the suggested questions."""
        text, suggestions = self.answer(request.query)
        for token in TOKEN.findall(text):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield token
        yield {"event": "workflow_complete", "data": {"suggested_questions": suggestions}}

    async def is_available(self) -> bool:
        """Always available: everything it needs ships with the package."""
        return True
