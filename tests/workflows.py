"""Workflows that only tests mount through GUEST_WORKFLOW."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from guest_queue.workflows.base import WorkflowBusy, WorkflowItem, WorkflowRequest


class DownWorkflow:
    """A workflow whose service is down."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        yield "unreachable"

    async def is_available(self) -> bool:
        return False


class ContextEcho:
    """Answers with what it was told beside the question: the language and earlier turns."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        turns = "|".join(f"{role}:{content}" for role, content in request.history)
        yield f"lang={request.language} turns={turns}"


class UnsendableOutput:
    """Answers ``Before ``, then yields what the question names, which strict JSON cannot
    carry: ``nan`` (NaN in a custom event), ``nan-complete`` (NaN in ``workflow_complete``'s
    payload), ``object`` (an object in a custom event); any other question gets a clean end."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        yield "Before "
        if request.query == "nan":
            yield {"event": "sources", "data": {"score": float("nan")}}
        elif request.query == "nan-complete":
            payload = {"suggested_questions": ["Why?"], "score": float("nan")}
            yield {"event": "workflow_complete", "data": payload}
        elif request.query == "object":
            yield {"event": "sources", "data": {"doc": object()}}
        yield "after."
        yield {"event": "workflow_complete", "data": {"suggested_questions": ["Why?"]}}


class BusyUpstream:
    """Its upstream is busy (``WorkflowBusy``, retry after 0.05 s) the first N times each
    request asks, for a question ``busy N``; ``busy always`` never gets an answer."""

    attempts: ClassVar[dict[str, int]] = {}

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        tries = self.attempts[request.request_id] = self.attempts.get(request.request_id, 0) + 1
        word, _, count = request.query.partition(" ")
        if word == "busy" and (count == "always" or tries <= int(count or 1)):
            raise WorkflowBusy(0.05, "The model is at capacity.")
        yield f"answered after {tries} tries"
