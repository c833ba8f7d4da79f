"""The workflow interface: what the queue calls to answer a question.

No Django imports here: workflows are plain asyncio code and can be tested alone.
Workflows import these names from ``guest_queue.workflows.base``, which re-exports
them; they live in the core, which hands each request to its workflow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: A workflow yields answer text, or ``{"event": name, "data": payload}`` for anything else.
WorkflowItem = str | dict[str, Any]


@dataclass(frozen=True)
class WorkflowRequest:
    """One guest question handed to a workflow.

    Built once, when the request is accepted (``QueueManager.submit``, or a hand-off's
    adoption), and carried by its ticket unchanged.
    """

    request_id: str
    query: str
    #: The guest's language (a short tag such as ``vi`` or ``en-US``), when known.
    language: str | None = None
    client_id: str | None = None
    #: Earlier turns of the conversation, oldest first: ``(role, content)`` with role
    #: ``"user"`` or ``"assistant"``.
    history: tuple[tuple[str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class WorkflowError(Exception):
    """The workflow failed with a message that is safe to show to the guest."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkflowUnavailable(Exception):
    """The service behind the workflow is down; the guest should retry later."""

    def __init__(self, message: str = "The assistant is temporarily unavailable.") -> None:
        super().__init__(message)
        self.message = message


class WorkflowBusy(Exception):
    """The service behind the workflow is overloaded right now: retry after a while.

    Raised before the first answer chunk, the request is not ended: it gives its slot
    back and goes back to the front of the line (its guest sees ``queued`` again), and
    the queue admits less until the service recovers. It is retried a few times at most,
    never beyond its timeout; then, or when raised after the first chunk, it ends with
    an ``error`` event, code ``unavailable``, carrying ``message``. ``retry_after_sec``
    is the service's hint (an HTTP ``Retry-After``); None when it gave none.
    """

    def __init__(
        self,
        retry_after_sec: float | None = None,
        message: str = "The assistant is busy right now; please try again shortly.",
    ) -> None:
        super().__init__(message)
        self.retry_after_sec = retry_after_sec
        self.message = message


@runtime_checkable
class Workflow(Protocol):
    """Answers one request as a stream of chunks and events."""

    def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]: ...


async def is_available(workflow: object) -> bool:
    """Ask a workflow whether its service is up; workflows without the method are."""
    probe = getattr(workflow, "is_available", None)
    if probe is None:
        return True
    return bool(await probe())
