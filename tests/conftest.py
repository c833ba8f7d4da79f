"""Shared fixtures: a fresh queue manager for every test, SSE parsing helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from guest_queue.runtime import reset_manager

from .services import PrivateRedis, redis_prefix, redis_url


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    reset_manager()
    yield
    reset_manager()


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Parse a whole SSE body the way the seed's frontend does, checking the framing."""
    events = []
    for message in raw.decode().split("\n\n"):
        if not message.strip() or message.startswith(":"):
            continue
        lines = message.split("\n")
        assert len(lines) == 1 and lines[0].startswith("data: "), message
        events.append(json.loads(lines[0][len("data: ") :]))
    return events


async def read_stream(response: Any) -> bytes:
    body = b""
    async for part in response.streaming_content:
        body += part
    return body


async def sse_events(response: Any) -> AsyncIterator[dict[str, Any]]:
    """Yield events from a streaming test response as they arrive."""
    buffer = b""
    async for part in response.streaming_content:
        buffer += part
        while b"\n\n" in buffer:
            message, buffer = buffer.split(b"\n\n", 1)
            if message.startswith(b"data: "):
                yield json.loads(message[6:])


def http_scope(
    method: str,
    path: str,
    headers: Any = (),
    *,
    query: bytes = b"",
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> dict[str, Any]:
    """An ASGI HTTP scope for the project's app, as a server would pass it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }


async def asgi_get(path: str) -> tuple[int, dict[str, Any]]:
    """GET through the project's real ASGI application (not the test client).

    The test client disconnects ``close_old_connections`` from ``request_finished``,
    so database connections opened by its per-request threads are never closed.
    """
    from asgiref.testing import ApplicationCommunicator

    from genestory.asgi import application

    scope = http_scope("GET", path, [(b"host", b"testserver")])
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(5)
    body = b""
    while True:
        message = await app.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await app.wait(5)
    return int(start["status"]), json.loads(body)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_test_url() -> str:
    """The real Redis the shared-queue tests use (they skip, or fail in CI, without it)."""
    return redis_url()


@pytest.fixture
async def redis_test_prefix(redis_test_url: str) -> AsyncIterator[str]:
    """A queue of the test's own on that Redis: its keys are deleted afterwards."""
    async for prefix in redis_prefix(redis_test_url):
        yield prefix
