"""The requests a queue has accepted and not yet finished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from .backends.base import Ticket
from .endings import Ending
from .records import Status


class LiveTickets:
    """Accepted tickets by request id; ``detached`` ones are outside the admission queue.

    Detached tickets are cache replays and followers of an identical question.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, Ticket] = {}
        self.detached: set[Ticket] = set()

    def add(self, ticket: Ticket, *, detached: bool) -> None:
        self.by_id[ticket.request_id] = ticket
        if detached:
            self.detached.add(ticket)

    def remove(self, ticket: Ticket) -> None:
        self.by_id.pop(ticket.request_id, None)
        self.detached.discard(ticket)

    def ended(self, ticket: Ticket, ending: Ending) -> None:
        """A request ended: it is no longer live."""
        self.remove(ticket)

    def get(self, request_id: str) -> Ticket | None:
        return self.by_id.get(request_id)

    def __iter__(self) -> Iterator[Ticket]:
        """A copy: ending a ticket while iterating is fine."""
        return iter(list(self.by_id.values()))

    def unclaimed_since(self, seconds: float) -> list[Ticket]:
        """Tickets whose stream has not started ``seconds`` after they were accepted."""
        cutoff = time.monotonic() - seconds
        return [
            t for t in self.by_id.values() if not t.drive.started and t.record.created_mono < cutoff
        ]

    async def release_unclaimed(
        self, limit_sec: float, leave: Callable[[Ticket, Ending], object]
    ) -> None:
        """Release (``leave``) tickets whose stream never started ``limit_sec`` after they
        were accepted (the client left before it could); looks at least every 5 s."""
        while True:
            await asyncio.sleep(min(5.0, limit_sec))
            never = Ending.silent(Status.CANCELLED, "abandoned", "Stream never started.")
            for ticket in self.unclaimed_since(limit_sec):
                if ticket.share.detached is None:
                    leave(ticket, never)

    def detached_counts(self) -> tuple[int, int]:
        """Accepted tickets outside the admission queue: (following a leader, replaying)."""
        replaying = sum(1 for t in self.detached if t.share.replay is not None)
        return len(self.detached) - replaying, replaying
