"""GUEST_MAX_BODY_BYTES at the ASGI layer: a too-large body is refused before it is read."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.test import override_settings

from genestory.asgi import application
from guest_queue.asgi import body_limit
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


async def refusal(app: ApplicationCommunicator) -> tuple[int, dict[bytes, bytes], bytes]:
    """The 413's head and whole JSON, sent before the response ends (it lingers)."""
    start = await app.receive_output(5)
    assert start["type"] == "http.response.start"
    message = await app.receive_output(5)
    body: bytes = message["body"]
    assert len(body) == int(dict(start["headers"])[b"content-length"])
    return int(start["status"]), dict(start["headers"]), body


async def ends(app: ApplicationCommunicator, within: float) -> None:
    """The response ends (its last, empty message) within ``within`` seconds, and the app."""
    message = await app.receive_output(within)
    assert message == {"type": "http.response.body", "body": b""}
    await app.wait(within)


async def test_a_declared_length_over_the_limit_is_refused_without_reading() -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1073741824")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    # Not one byte of the body is sent: the answer must come from the headers alone.
    status, response_headers, body = await refusal(app)
    assert status == 413
    assert response_headers[b"content-type"] == b"application/json"
    assert response_headers[b"connection"] == b"close"  # the server stops reading too
    assert json.loads(body) == {
        "error": f"The request body exceeds {LIMIT} bytes.",
        "code": "body_too_large",
    }
    assert get_manager().stats.total == 0
    await app.send_input({"type": "http.disconnect"})
    await ends(app, 2)


async def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat/simple", headers))
    chunk = b"x" * 16384
    # Four chunks make exactly the limit: no answer yet.
    for _ in range(4):
        await app.send_input({"type": "http.request", "body": chunk, "more_body": True})
    assert await app.receive_nothing(0.2)
    # The fifth passes it: refused at once, without waiting for the rest.
    await app.send_input({"type": "http.request", "body": chunk, "more_body": True})
    status, _, body = await refusal(app)
    assert status == 413 and json.loads(body)["code"] == "body_too_large"
    await app.send_input({"type": "http.request", "body": chunk, "more_body": False})
    await ends(app, 2)
    assert get_manager().stats.total == 0


async def test_after_the_413_the_rest_of_the_body_is_read_away_then_the_response_ends() -> None:
    # A client that writes its whole body before reading (httpx, aiohttp) is still writing
    # when the 413 is sent; closing on its unread bytes would reset the connection and
    # destroy the 413 it has not read. So the body is read to its end, then the response ends.
    headers = [(b"content-type", b"application/json"), (b"content-length", b"3000000")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    status, _, _ = await refusal(app)
    assert status == 413
    block = b"x" * 65536
    for _ in range(3_000_000 // len(block)):
        await app.send_input({"type": "http.request", "body": block, "more_body": True})
        assert await app.receive_nothing(0)  # still reading: the response stays open
    await app.send_input({"type": "http.request", "body": b"x" * 50, "more_body": False})
    await ends(app, 1)
    assert app.input_queue.empty()


async def test_the_read_after_a_413_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_limit, "LINGER_MAX_BYTES", 100_000)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1073741824")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    await refusal(app)
    block = b"x" * 65536
    for _ in range(10):
        await app.send_input({"type": "http.request", "body": block, "more_body": True})
    await ends(app, 1)
    # 100 000 bytes passed within the second block: the other eight are never read.
    assert app.input_queue.qsize() == 8


async def test_the_read_after_a_413_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_limit, "LINGER_MAX_SEC", 0.3)
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    await app.send_input({"type": "http.request", "body": b"x" * 70000, "more_body": True})
    await refusal(app)
    # A client that stops sending (or trickles) does not hold the connection open.
    started = time.monotonic()
    await ends(app, 2)
    assert 0.25 < time.monotonic() - started < 1.5


async def test_a_client_waiting_for_100_continue_is_refused_without_lingering() -> None:
    # It sends no body until "100 Continue", which the 413 replaces: nothing to read away.
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"3000000"),
        (b"expect", b"100-continue"),
    ]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    start = await app.receive_output(2)
    assert start["status"] == 413
    message = await app.receive_output(2)
    assert json.loads(message["body"])["code"] == "body_too_large"
    assert not message.get("more_body", False)
    await app.wait(2)


async def test_a_body_that_ends_with_the_message_passing_the_limit_is_not_lingered_on() -> None:
    headers = [(b"content-type", b"application/json")]
    app = ApplicationCommunicator(application, scope("/api/v1/guest/chat", headers))
    await app.send_input({"type": "http.request", "body": b"x" * 70000, "more_body": False})
    start = await app.receive_output(2)
    message = await app.receive_output(2)
    assert start["status"] == 413 and not message.get("more_body", False)
    await app.wait(2)


async def test_the_limit_follows_the_setting_and_a_body_within_it_is_served() -> None:
    query = json.dumps({"query": "chunks=1", "pad": "y" * 200}).encode()
    headers = [(b"content-type", b"application/json")]
    with override_settings(GUEST_MAX_BODY_BYTES=128):
        app = ApplicationCommunicator(application, scope("/api/v1/guest/chat/simple", headers))
        await app.send_input({"type": "http.request", "body": query[:100], "more_body": True})
        await app.send_input({"type": "http.request", "body": query[100:], "more_body": False})
        status, _, body = await response(app)
        assert status == 413 and json.loads(body)["code"] == "body_too_large"
        await app.wait(2)
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
