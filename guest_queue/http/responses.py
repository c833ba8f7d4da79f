"""Response types of the API: JSON errors and the event stream."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse, StreamingHttpResponse

from ..core.backends.base import Ticket
from ..core.consume import sse_stream
from ..core.manager import QueueManager


def json_error(status: int, code: str, message: str, /, **extra: Any) -> JsonResponse:
    """Every error body is ``{"error": message, "code": code}`` (plus context)."""
    response = JsonResponse({"error": message, "code": code, **extra}, status=status)
    retry_after = extra.get("retry_after")
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


class EventStreamResponse(StreamingHttpResponse):
    """A request's Server-Sent Events; closing the response releases the request.

    Django may close a response whose iterator never started (the client left
    between the view and the first send); then only ``close()`` frees the slot.
    """

    def __init__(self, manager: QueueManager, ticket: Ticket) -> None:
        super().__init__(sse_stream(manager, ticket), content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"
        self._manager = manager
        self._ticket: Ticket | None = ticket

    def close(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            self._manager.release_threadsafe(ticket)
            # Forgotten: Django's request cycle keeps the response until the garbage
            # collector frees it, and the ticket (its record, events) need not wait.
        super().close()
