"""Benchmark-only baseline: the same events as the queue, without the queue.

Mounted only by the bench-only URL conf (``bench.urls``, ``bench.settings``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from django.http import HttpRequest, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from guest_queue.core import events as ev

CHUNKS = 10


async def _events(request_id: str) -> AsyncIterator[bytes]:
    yield ev.Event(
        ev.QUEUED, {"queue_position": 1, "queue_size": 0, "estimated_wait_sec": None}
    ).encode(request_id)
    yield ev.Event(ev.PROCESSING, {"waited_ms": 0}).encode(request_id)
    for i in range(CHUNKS):
        yield ev.Event(ev.ANSWER_CHUNK, f"chunk {i} ").encode(request_id)
    yield ev.Event(ev.WORKFLOW_COMPLETE, {"suggested_questions": [], "cached": False}).encode(
        request_id
    )


@csrf_exempt
async def bare_stream(request: HttpRequest) -> StreamingHttpResponse:
    """A bare async StreamingHttpResponse of the events a ten-chunk answer produces."""
    response = StreamingHttpResponse(_events(str(uuid.uuid4())), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
