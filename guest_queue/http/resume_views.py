"""HTTP glue for resumable requests: resume a stream, cancel a request."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from ..core.errors import NotAccepting
from ..core.eventlog import LogTrimmed
from ..core.resume import LogExpired, NotSentYet, UnknownRequest
from ..runtime import get_manager
from .responses import json_error
from .resumable import event_stream
from .validation import BadRequest
from .views import allow

#: Longest ``Last-Event-ID`` / ``after`` value read (a seq never gets near it).
MAX_SEQ_DIGITS = 12


def _after(request: HttpRequest) -> int:
    """Where to resume: ``Last-Event-ID`` (what ``EventSource`` sends) wins over ``?after=``."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.GET.get("after", "0")
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_SEQ_DIGITS:
        raise BadRequest(
            400, "invalid_after", "Last-Event-ID or after must be a whole number (a seq)."
        )
    return int(raw)


def _canonical(request_id: str) -> str | None:
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        return None


def trimmed() -> HttpResponseBase:
    return json_error(
        410, "log_trimmed", "The events after this one are no longer kept; ask again."
    )


@allow("GET")
async def chat_events(request: HttpRequest, request_id: str) -> HttpResponseBase:
    """Re-attach to a resumable request: the events after the given seq, then live ones."""
    after = _after(request)
    canonical = _canonical(request_id)
    if canonical is None:
        return json_error(404, "not_found", "No such request: malformed id.")
    try:
        messages = await get_manager().resume(canonical, after)
    except UnknownRequest:
        return json_error(404, "not_found", "No such resumable request (it may have expired).")
    except LogExpired:
        return json_error(410, "log_expired", "This request's events have expired.")
    except LogTrimmed:
        return trimmed()
    except NotSentYet as exc:
        raise BadRequest(400, "invalid_after", str(exc)) from None
    except NotAccepting:
        # Draining: another process should serve (and perhaps adopt) it.
        return json_error(
            503, "shutting_down", "The server is restarting; resume again.", retry_after=1
        )
    return event_stream(messages)


@allow("POST")
async def chat_cancel(request: HttpRequest, request_id: str) -> HttpResponseBase:
    """Stop a request on purpose: its place or slot is freed at once."""
    canonical = _canonical(request_id)
    if canonical is None:
        return json_error(404, "not_found", "No such request: malformed id.")
    status = await get_manager().cancel_anywhere(canonical)
    if status is None:
        return json_error(404, "not_found", "No such request (it may have expired).")
    return JsonResponse({"request_id": canonical, "status": status.value})
