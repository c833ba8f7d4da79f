"""Workflows that only tests mount through GUEST_WORKFLOW."""

from __future__ import annotations

from collections.abc import AsyncIterator

from guest_queue.workflows.base import WorkflowItem, WorkflowRequest


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
