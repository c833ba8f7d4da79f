"""Two ways to consume a request's events: as SSE bytes, or collected into one answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import events as ev

if TYPE_CHECKING:
    from .backends.base import Ticket
    from .manager import QueueManager


async def sse_stream(manager: QueueManager, ticket: Ticket) -> AsyncIterator[bytes]:
    """The request's events encoded as Server-Sent Events, heartbeats as comments.

    Events that are ready together (a burst of chunks) go out in one write; an
    event is never held back waiting for one that is not there yet.
    """
    request_id = ticket.request_id
    stream = manager.stream(ticket)
    pending: list[bytes] = []
    async for event in stream.events():
        pending.append(ev.HEARTBEAT_BYTES if event is None else event.encode(request_id))
        if not stream.more_ready:
            yield b"".join(pending)
            pending.clear()
    if pending:
        yield b"".join(pending)


@dataclass(slots=True)
class Collected:
    """A whole answer gathered from a stream, with how it ended."""

    request_id: str
    terminal: ev.Event | None = None
    chunks: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return "".join(self.chunks)

    @property
    def payload(self) -> dict[str, Any]:
        data = self.terminal.data if self.terminal is not None else None
        return data if isinstance(data, dict) else {}


async def collect(manager: QueueManager, ticket: Ticket) -> Collected:
    """Run the request to its end and keep the answer text and the terminal event."""
    result = Collected(ticket.request_id)
    async for event in manager.events(ticket):
        if event is None:
            continue
        if event.name == ev.ANSWER_CHUNK:
            result.chunks.append(event.data)
        elif event.is_terminal:
            result.terminal = event
    return result
