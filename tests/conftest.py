"""Shared fixtures: a fresh queue manager for every test, SSE parsing helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from guest_queue.runtime import reset_manager


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
