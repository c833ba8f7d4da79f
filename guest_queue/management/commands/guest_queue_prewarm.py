"""Pre-warm the answer cache: answer a list of questions now, so guests get them instantly."""

from __future__ import annotations

import asyncio
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...answer_cache import DjangoAnswerCache
from ...core.answers.cache import CachedAnswer, cacheable, question_key
from ...runtime import build_workflow
from ...workflows.base import Workflow, WorkflowError, WorkflowRequest, WorkflowUnavailable


def demo_questions() -> list[str]:
    """Every question of the demo knowledge base, in both languages."""
    from ...workflows.demo import knowledge_base

    return [q for lang in ("en", "vi") for e in knowledge_base(lang).entries for q in e.questions]


async def answer(workflow: Workflow, question: str) -> CachedAnswer:
    """Run the workflow to the end; only a complete answer is returned."""
    parts: list[str] = []
    suggested: tuple[str, ...] = ()
    async for item in workflow.stream(WorkflowRequest(request_id="prewarm", query=question)):
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
            "--demo", action="store_true", help="Every question of the demo knowledge base."
        )
        parser.add_argument("--force", action="store_true", help="Answer cached questions again.")
        parser.add_argument("--concurrency", type=int, default=4)

    def handle(self, *args: Any, **options: Any) -> None:
        questions: list[str] = []
        if options["file"]:
            try:
                text = options["file"].read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"Cannot read {options['file']}: {exc}") from exc
            questions += [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            ]
        if options["demo"]:
            questions += demo_questions()
        if not questions:
            raise CommandError("Nothing to pre-warm: give --file and/or --demo.")
        stored, skipped, failed = asyncio.run(
            self._prewarm(questions, options["force"], max(1, options["concurrency"]))
        )
        self.stdout.write(f"Stored {stored}, already cached {skipped}, failed {failed}.")

    async def _prewarm(
        self, questions: list[str], force: bool, concurrency: int
    ) -> tuple[int, int, int]:
        cache = DjangoAnswerCache()
        workflow = build_workflow()
        if hasattr(workflow, "token_delay"):
            workflow.token_delay = 0  # pacing is for guests watching, not for the cache
        for question in questions:
            if not cacheable(question):
                self.stderr.write(f"{question!r}: hidden or control characters; not cached")
        questions = [q for q in questions if cacheable(q)]
        keys = list(dict.fromkeys(question_key(q) for q in questions))
        originals = {question_key(q): q for q in reversed(questions)}
        counts = {"stored": 0, "skipped": 0, "failed": 0}
        limit = asyncio.Semaphore(concurrency)

        async def one(key: str) -> None:
            async with limit:
                if not force and await cache.get(key) is not None:
                    counts["skipped"] += 1
                    return
                try:
                    result = await answer(workflow, originals[key])
                except (WorkflowError, WorkflowUnavailable) as exc:
                    self.stderr.write(f"{originals[key]!r}: {exc}")
                    counts["failed"] += 1
                    return
                await cache.set(key, result)
                counts["stored"] += 1

        await asyncio.gather(*(one(key) for key in keys))
        return counts["stored"], counts["skipped"], counts["failed"]
