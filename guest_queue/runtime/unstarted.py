"""Tickets taken by an ASGI request whose stream never started, released when it ends.

When the client disconnects while the response middleware runs, Django cancels
the request and drops the response unclosed: neither the stream's ``finally``
nor ``close()`` runs. The view notes each ticket it takes here; the ASGI layer
(``guest_queue.asgi.SharedSyncThreads``) releases, when the request's ASGI call
ends, those whose stream never started.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from ..core.backends.base import Ticket
from ..core.manager import QueueManager

#: The tickets the current ASGI request took, for release if its stream never starts.
_taken: ContextVar[list[tuple[QueueManager, Ticket]] | None] = ContextVar(
    "guest_queue_taken", default=None
)


def note_ticket(manager: QueueManager, ticket: Ticket) -> None:
    """Release ``ticket`` when this ASGI request ends if its stream never started."""
    taken = _taken.get()
    if taken is not None:
        taken.append((manager, ticket))


def release_unstarted(taken: list[tuple[QueueManager, Ticket]]) -> None:
    for manager, ticket in taken:
        if not ticket.drive.started:
            manager.release(ticket)


Taken = list[tuple[QueueManager, Ticket]]


def taken_here() -> tuple[Taken, Token[Taken | None]]:
    """Start noting the tickets this ASGI request takes: the list, and the token to reset."""
    taken: Taken = []
    return taken, _taken.set(taken)


def stop_noting(token: Token[Taken | None]) -> None:
    _taken.reset(token)
