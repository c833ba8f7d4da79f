"""A resumable request's POST: the body's flag and the stream that outlives its connection."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse

from ..core.backends.base import Ticket
from ..core.manager import QueueManager
from .validation import BadRequest


def resumable_flag(data: dict[str, Any]) -> bool:
    """The body's optional ``"resumable"`` field: a boolean."""
    value = data.get("resumable", False)
    if not isinstance(value, bool):
        raise BadRequest(400, "invalid_resumable", 'The field "resumable" must be true or false.')
    return value


def event_stream(body: Any) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def resumable_response(manager: QueueManager, ticket: Ticket) -> StreamingHttpResponse:
    """A resumable request's POST stream: its log from the start, without ``id:`` lines.

    Closing it, or a disconnect, only detaches the reader: the request lives on
    for the resume grace period.
    """
    res = manager.resumable(ticket)
    return event_stream(manager.resumes.read(res, 0, with_ids=False))
