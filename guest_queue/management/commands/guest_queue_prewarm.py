"""Pre-warm the answer cache: answer a list of questions now, so guests get them instantly."""

from __future__ import annotations

import asyncio
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...core.answers.cache import CachedAnswer, answer_key, cacheable
from ...runtime import build_workflow
from ...runtime.answer_cache import DjangoAnswerCache
from ...workflows.base import Workflow, WorkflowError, WorkflowRequest, WorkflowUnavailable

#: A question and the language it is asked in (None: guests who send none).
Asked = tuple[str, str | None]


def demo_questions(workflow: Workflow) -> list[Asked]:
    """Every question the workflow knows (``questions()``), in its language and in none.

    The demo workflow lists the questions of its configured knowledge base; a
    workflow without ``questions()`` has none to give, which is a ``CommandError``.
    """
    questions = getattr(workflow, "questions", None)
    if not callable(questions):
        raise CommandError(
            f"--demo needs a workflow that lists its questions (questions()), such as "
            f"guest_queue.workflows.demo.DemoWorkflow; GUEST_WORKFLOW is {type(workflow).__name__}."
        )
    return [(q, language) for q, lang in questions() for language in (lang, None)]


async def answer(workflow: Workflow, question: str, language: str | None = None) -> CachedAnswer:
    """Run the workflow to the end; only a complete answer is returned."""
    parts: list[str] = []
    suggested: tuple[str, ...] = ()
    request = WorkflowRequest(request_id="prewarm", query=question, language=language)
    async for item in workflow.stream(request):
        if isinstance(item, str):
            parts.append(item)
        elif item.get("event") == "workflow_complete" and isinstance(item.get("data"), dict):
            suggested = tuple(item["data"].get("suggested_questions") or ())
        elif item.get("event") == "answer_chunk" and isinstance(item.get("data"), str):
            parts.append(item["data"])
    return CachedAnswer("".join(parts), suggested)


class Command(BaseCommand):
    help = "Answer questions with the configured workflow and store the answers in the cache."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--file", type=Path, help="A text file: one question per line.")
        parser.add_argument(
            "--demo",
            action="store_true",
            help="Every question of the configured demo workflow's knowledge base.",
        )
        parser.add_argument(
            "--language",
            action="append",
            metavar="TAG",
            help=(
                "Warm the --file questions for guests asking in this language (repeatable; "
                "'' for guests who send none). Default: none, and LANGUAGE_CODE."
            ),
        )
        parser.add_argument("--force", action="store_true", help="Answer cached questions again.")
        parser.add_argument("--concurrency", type=int, default=4)

    def handle(self, *args: Any, **options: Any) -> None:
        questions: list[Asked] = []
        languages = options["language"] or ["", settings.LANGUAGE_CODE]
        if options["file"]:
            try:
                text = options["file"].read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"Cannot read {options['file']}: {exc}") from exc
            questions += [
                (line.strip(), language or None)
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
                for language in dict.fromkeys(languages)
            ]
        if not (options["file"] or options["demo"]):
            raise CommandError("Nothing to pre-warm: give --file and/or --demo.")
        workflow = build_workflow()
        if options["demo"]:
            questions += demo_questions(workflow)
        if not questions:
            raise CommandError("Nothing to pre-warm: the questions given are empty.")
        stored, skipped, failed = asyncio.run(
            self._prewarm(workflow, questions, options["force"], max(1, options["concurrency"]))
        )
        self.stdout.write(f"Stored {stored}, already cached {skipped}, failed {failed}.")

    async def _prewarm(
        self, workflow: Workflow, questions: list[Asked], force: bool, concurrency: int
    ) -> tuple[int, int, int]:
        cache = DjangoAnswerCache()
        if hasattr(workflow, "token_delay"):
            workflow.token_delay = 0  # pacing is for guests watching, not for the cache
        for question in dict.fromkeys(q for q, _ in questions):
            if not cacheable(question):
                self.stderr.write(f"{question!r}: hidden or control characters; not cached")
        questions = [(q, lang) for q, lang in questions if cacheable(q)]
        keys = list(dict.fromkeys(answer_key(q, lang) for q, lang in questions))
        originals = {answer_key(q, lang): (q, lang) for q, lang in reversed(questions)}
        counts = {"stored": 0, "skipped": 0, "failed": 0}
        limit = asyncio.Semaphore(concurrency)

        async def one(key: str) -> None:
            async with limit:
                if not force and await cache.get(key) is not None:
                    counts["skipped"] += 1
                    return
                try:
                    result = await answer(workflow, *originals[key])
                except (WorkflowError, WorkflowUnavailable) as exc:
                    self.stderr.write(f"{originals[key][0]!r}: {exc}")
                    counts["failed"] += 1
                    return
                await cache.set(key, result)
                counts["stored"] += 1

        await asyncio.gather(*(one(key) for key in keys))
        return counts["stored"], counts["skipped"], counts["failed"]
