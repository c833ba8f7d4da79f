"""The baseline: a single-file Django app with no middleware and one bare streaming view.

    uvicorn bench.bare_site:application

``POST /chat`` answers a bare async ``StreamingHttpResponse`` of the events a
ten-chunk answer produces (queued, processing, ten chunks, workflow_complete),
encoded as the guest API encodes them; ``GET /health`` says it is up. No
middleware, no apps, no database: what Django itself costs per request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-bare-site",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

CHUNKS = 10


def _message(name: str, data: Any, request_id: str, seq: int) -> bytes:
    payload = {"event": name, "data": data, "request_id": request_id, "seq": seq}
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _events(request_id: str) -> AsyncIterator[bytes]:
    queued = {"queue_position": 1, "queue_size": 0, "estimated_wait_sec": None}
    yield _message("queued", queued, request_id, 1)
    yield _message("processing", {"waited_ms": 0}, request_id, 2)
    for i in range(CHUNKS):
        yield _message("answer_chunk", f"chunk {i} ", request_id, 3 + i)
    done = {"suggested_questions": [], "cached": False}
    yield _message("workflow_complete", done, request_id, 3 + CHUNKS)


async def chat(request: HttpRequest) -> StreamingHttpResponse:
    """A bare async StreamingHttpResponse of a ten-chunk answer's events."""
    json.loads(request.body)  # parse the question, as any JSON API does
    response = StreamingHttpResponse(_events(str(uuid.uuid4())), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


urlpatterns = [path("chat", chat), path("health", health)]
application = get_asgi_application()
