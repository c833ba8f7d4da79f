"""``GUEST_MAX_BODY_BYTES`` enforced in front of Django, before the body is uploaded.

Django's ASGI handler reads a request's whole body (spooled to disk past 2.5 MB)
before any middleware or view runs, so a limit checked in the view comes after
a 1 GiB upload. Here a ``Content-Length`` above the limit is refused at once,
unread, and a chunked body is read only until it passes the limit; both get the
API's JSON 413 with ``Connection: close``, so the server stops reading too.
"""

from __future__ import annotations

import json

from .conf import app_settings
from .lifespan import Message, Receive, Scope, Send


async def read_within_limit(scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """Read the body up to the limit: a ``receive`` that replays it, or None once a 413 is sent."""
    limit: int = app_settings.MAX_BODY_BYTES
    if _declared_length(scope) > limit:
        await _refuse(send, limit)
        return None
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # The client left before its body was complete: let the app see that.
            return _replay([message], receive)
        body: bytes = message.get("body", b"")
        size += len(body)
        if size > limit:
            await _refuse(send, limit)
            return None
        parts.append(body)
        if not message.get("more_body", False):
            break
    return _replay([{"type": "http.request", "body": b"".join(parts), "more_body": False}], receive)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # servers refuse malformed lengths before the app is called
    return 0


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": f"The request body exceeds {limit} bytes.", "code": "body_too_large"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
