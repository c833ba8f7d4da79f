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
