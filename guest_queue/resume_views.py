"""HTTP glue for resumable requests: resume a stream, cancel a request."""

from __future__ import annotations

import functools
import uuid

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from .core.eventlog import LogTrimmed
from .core.resume import LogExpired, Resumable
from .responses import json_error
from .resumable import event_stream
from .runtime import get_manager
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
    manager = get_manager()
    expired = json_error(410, "log_expired", "This request's events have expired.")
    try:
        res: Resumable = manager.resumes.get(canonical)
    except LogExpired:
        return expired
    except KeyError:
        shared = manager.resumes.shared
        state = await shared.state(canonical) if shared is not None else None
        if state is None:
            return json_error(404, "not_found", "No such resumable request (it may have expired).")
        if state != "live":
            return expired
        assert shared is not None
        bounds = await shared.bounds(canonical)
        if bounds is not None:
            # The same checks as for a log this process holds.
            first, last = bounds
            if after > last:
                message = f"No event {after} has been sent yet."
                raise BadRequest(400, "invalid_after", message) from None
            if after + 1 < first:
                return trimmed()
        if not manager.accepting:
            # Draining: another process should serve (and perhaps adopt) it.
            return json_error(
                503, "shutting_down", "The server is restarting; resume again.", retry_after=1
            )
        adopted = await manager.adopt(canonical)
        if adopted is not None:
            # Its process was drained for a deploy: this one drives it now, same place.
            return event_stream(manager.resumes.read(adopted, after, with_ids=True))
        # Another process drives it: read its log from the shared queue's Redis.
        return event_stream(
            manager.resumes.read_remote(
                canonical,
                after,
                with_ids=True,
                alive=functools.partial(manager.held_anywhere, canonical),
            )
        )
    if after > res.log.last_seq:
        raise BadRequest(400, "invalid_after", f"No event {after} has been sent yet.")
    try:
        res.log.read_after(after)
    except LogTrimmed:
        return trimmed()
    return event_stream(manager.resumes.read(res, after, with_ids=True))


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
