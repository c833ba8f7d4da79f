"""GUEST_MAX_BODY_BYTES at the ASGI layer: a too-large body is refused before it is read."""

from __future__ import annotations

import json
from typing import Any

from asgiref.testing import ApplicationCommunicator
from django.test import override_settings

from genestory.asgi import application
from guest_queue.runtime import get_manager

from .conftest import http_scope

LIMIT = 65536  # the documented default of GUEST_MAX_BODY_BYTES


def scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    return http_scope(method, path, [(b"host", b"testserver"), *headers])


async def response(app: ApplicationCommunicator) -> tuple[int, dict[bytes, bytes], bytes]:
    start = await app.receive_output(5)
    assert start["type"] == "http.response.start"
    body = b""
    while True:
        message = await app.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return int(start["status"]), dict(start["headers"]), body


async def test_a_declared_length_over_the_limit_is_refused_without_reading() -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1073741824")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    # Not one byte of the body is sent: the answer must come from the headers alone.
    status, response_headers, body = await response(app)
    await app.wait(2)
    assert status == 413
    assert response_headers[b"content-type"] == b"application/json"
    assert response_headers[b"connection"] == b"close"  # the server stops reading too
    assert json.loads(body) == {
        "error": f"The request body exceeds {LIMIT} bytes.",
        "code": "body_too_large",
    }
    assert get_manager().stats.total == 0


async def test_a_chunked_body_is_read_only_until_it_passes_the_limit() -> None:
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat/simple", headers))
    chunk = b"x" * 16384
    for _ in range(12):
        await app.send_input({"type": "http.request", "body": chunk, "more_body": True})
    status, _, body = await response(app)
    await app.wait(2)
    assert status == 413 and json.loads(body)["code"] == "body_too_large"
    # Four chunks make exactly the limit, the fifth passes it: the rest is never read.
    assert app.input_queue.qsize() == 12 - 5


async def test_the_limit_follows_the_setting_and_a_body_within_it_is_served() -> None:
    query = json.dumps({"query": "chunks=1", "pad": "y" * 200}).encode()
    headers = [(b"content-type", b"application/json")]
    with override_settings(GUEST_MAX_BODY_BYTES=128):
        app = ApplicationCommunicator(application, scope("/api/v1/guest/chat/simple", headers))
        await app.send_input({"type": "http.request", "body": query[:100], "more_body": True})
        await app.send_input({"type": "http.request", "body": query[100:], "more_body": False})
        status, _, body = await response(app)
        assert status == 413 and json.loads(body)["code"] == "body_too_large"
    # Within the limit, split over several messages: replayed to Django whole.
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat/simple", headers))
    await app.send_input({"type": "http.request", "body": query[:100], "more_body": True})
    await app.send_input({"type": "http.request", "body": query[100:], "more_body": False})
    status, _, body = await response(app)
    await app.wait(5)
    assert status == 200 and json.loads(body)["status"] == "completed"


async def test_other_paths_are_left_to_django() -> None:
    headers = [(b"content-length", b"1073741824")]
    app = ApplicationCommunicator(application, scope("/admin/login/", headers))
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    status, _, _ = await response(app)
    await app.wait(5)
    assert status != 413


async def test_a_post_without_a_content_type_is_refused_when_it_has_a_body() -> None:
    body = json.dumps({"query": "chunks=1"}).encode()
    app = ApplicationCommunicator(
        application,
        scope("/api/v1/guest/chat/simple", [(b"content-length", str(len(body)).encode())]),
    )
    await app.send_input({"type": "http.request", "body": body, "more_body": False})
    status, _, payload = await response(app)
    await app.wait(5)
    assert status == 415 and json.loads(payload)["code"] == "unsupported_media_type"
