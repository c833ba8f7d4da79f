"""The built-in workflow: an offline guest assistant in English and Vietnamese.

It answers from a knowledge base of questions and answers and streams word by
word at an LLM-like pace, so the queue can be tried without any model server.
The knowledge shipped with the package is about this demo itself; a site gives
its own with ``GUEST_WORKFLOW_OPTIONS = {"knowledge": "mysite.assistant"}`` (a
package or a directory holding ``en.json`` and ``vi.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ..core.config import ConfigProblem
from .base import WorkflowItem, WorkflowRequest
from .matching import Index, detect_language, features

#: The knowledge shipped with the app: what this demo is and how to connect a model.
DEFAULT_KNOWLEDGE = "guest_queue.workflows.knowledge"
#: The languages a knowledge base holds, one ``<language>.json`` file each.
LANGUAGES = ("en", "vi")

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


def _source(knowledge: str) -> Traversable:
    """The folder of ``knowledge``: a directory path, else an importable package."""
    if os.sep in knowledge or "/" in knowledge or Path(knowledge).is_dir():
        return Path(knowledge)
    return resources.files(knowledge)


@cache
def knowledge_base(language: str, knowledge: str = DEFAULT_KNOWLEDGE) -> KnowledgeBase:
    """The knowledge base for ``language`` (``en`` or ``vi``) from ``knowledge``, loaded once.

    ``knowledge`` is a package (``"mysite.assistant"``) or a directory path; it holds
    ``en.json`` and ``vi.json``. Raises ``OSError``, ``ImportError``, ``ValueError`` or
    ``KeyError`` when a file is missing or malformed.
    """
    raw: dict[str, Any] = json.loads(
        _source(knowledge).joinpath(f"{language}.json").read_text("utf-8")
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
    """Answers common guest questions from a knowledge base.

    Its options (``GUEST_WORKFLOW_OPTIONS``): ``knowledge``, a package or a directory
    holding ``en.json`` and ``vi.json`` (default: the app's own, about this demo), and
    ``token_delay``, the seconds between words (default ``GUEST_DEMO_TOKEN_DELAY_SEC``).
    """

    def __init__(
        self, knowledge: str = DEFAULT_KNOWLEDGE, token_delay: float | None = None
    ) -> None:
        if token_delay is None:
            from ..conf import app_settings

            token_delay = float(app_settings.DEMO_TOKEN_DELAY_SEC)
        self.knowledge = knowledge
        self.token_delay = token_delay

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> list[ConfigProblem]:
        """A ``knowledge`` option that cannot be read; the app reports it as a system check."""
        knowledge = options.get("knowledge", DEFAULT_KNOWLEDGE)
        if not isinstance(knowledge, str):
            return [_knowledge_problem(f"must be a package name or a path, not {knowledge!r}")]
        for language in LANGUAGES:
            try:
                knowledge_base(language, knowledge)
            except (OSError, ImportError, ValueError, KeyError, TypeError) as exc:
                return [_knowledge_problem(f"{knowledge!r} has no readable {language}.json: {exc}")]
        return []

    def knowledge_base(self, language: str) -> KnowledgeBase:
        """This workflow's knowledge base in ``language``."""
        return knowledge_base(language, self.knowledge)

    def questions(self) -> list[tuple[str, str]]:
        """Every question of the knowledge base and its language (what ``--demo`` pre-warms)."""
        return [
            (question, language)
            for language in LANGUAGES
            for entry in self.knowledge_base(language).entries
            for question in entry.questions
        ]

    def answer(self, question: str) -> tuple[str, list[str]]:
        """The answer text and follow-up questions for ``question``."""
        kb = self.knowledge_base(detect_language(question))
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
        """Always available: it needs no service, only its knowledge files."""
        return True


def _knowledge_problem(what: str) -> ConfigProblem:
    return ConfigProblem(
        "E041",
        f"The demo workflow's knowledge {what}.",
        "Set GUEST_WORKFLOW_OPTIONS['knowledge'] to a package or a directory holding en.json "
        "and vi.json, or leave it out for the app's own.",
    )
