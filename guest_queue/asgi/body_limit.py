"""``GUEST_MAX_BODY_BYTES`` enforced in front of Django, before the body is uploaded.

Django's ASGI handler reads a request's whole body (spooled to disk past 2.5 MB)
before any middleware or view runs, so a limit checked in the view comes after
a 1 GiB upload. Here a ``Content-Length`` above the limit is refused at once,
unread, and a chunked body is read only until it passes the limit; both get the
API's JSON 413 with ``Connection: close``, so the server stops reading too.

A client that writes its whole body before it reads the answer (``httpx``,
``aiohttp``, most HTTP libraries) is still writing when the 413 is sent. Had
the server closed the connection then, with the client's bytes unread in its
socket, the kernel would answer them with a TCP reset, and the reset discards
the 413 the client has not read yet: it sees a "connection reset", never the
JSON. So, as nginx's lingering close does, the refusal sends its JSON at once
and then reads and discards what the client still sends, up to
``LINGER_MAX_BYTES`` and ``LINGER_MAX_SEC``, before it ends the response and
the server closes. A body up to the limit plus ``LINGER_MAX_BYTES`` (and sent
within ``LINGER_MAX_SEC``) thus gets its JSON 413 in every client; a larger one
still ends after that much, with a reset, as before. Nothing discarded is kept.
"""

from __future__ import annotations

import asyncio
import json

from ..conf import app_settings
from .lifespan import Message, Receive, Scope, Send

#: After a 413, how much more of the refused body is read and thrown away before the
#: connection closes, so that a client still uploading reads the 413 instead of a reset.
#: The server's work per refusal stays bounded by this (not by what the client declares).
LINGER_MAX_BYTES = 4 << 20
#: ... and for how long at most, in all, however slowly the client sends.
LINGER_MAX_SEC = 3.0


async def read_within_limit(scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """Read the body up to the limit: a ``receive`` that replays it, or None once a 413 is sent."""
    limit: int = app_settings.MAX_BODY_BYTES
    if _declared_length(scope) > limit:
        # A client waiting for "100 Continue" gets the 413 instead and sends no body.
        await _refuse(send, receive, limit, linger=not _expects_continue(scope))
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
            await _refuse(send, receive, limit, linger=message.get("more_body", False))
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


def _expects_continue(scope: Scope) -> bool:
    return any(
        name.lower() == b"expect" and value.lower() == b"100-continue"
        for name, value in scope.get("headers", ())
    )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


async def _refuse(send: Send, receive: Receive, limit: int, *, linger: bool) -> None:
    """Send the JSON 413; with ``linger``, read away the rest of the body before ending it."""
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
    if not linger:
        await send({"type": "http.response.body", "body": body})
        return
    # The whole JSON goes out now (its Content-Length tells the client it is complete),
    # but the response stays open: ASGI servers stop handing the app the request body
    # once the response has ended, and close the connection right after it.
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await _discard(receive)
    await send({"type": "http.response.body", "body": b""})


async def _discard(receive: Receive) -> None:
    """Read and drop the body until its end, the client leaves, or a linger bound is met."""
    discarded = 0
    try:
        async with asyncio.timeout(LINGER_MAX_SEC):
            while discarded <= LINGER_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                discarded += len(message.get("body", b""))
    except TimeoutError:
        pass
