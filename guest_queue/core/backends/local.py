"""This process's own queue: waiting tickets in one insertion-ordered dict.

Joining, leaving from the middle and admitting the head are all O(1). Positions
are recomputed by one notifier task, at most once per interval, so a burst of
departures costs thousands of waiters one update each rather than one per
departure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..concurrency import Change, LimitController
from ..fairness import ClientHolds, Group
from .base import Admission, Ticket


class LocalAdmission(Admission):
    """This process's own queue: at most ``max_active`` admitted, ``max_waiting`` in line."""

    def __init__(
        self,
        max_active: int,
        max_waiting: int,
        update_interval: float,
        max_per_client: int = 0,
        *,
        limiter: LimitController | None = None,
    ) -> None:
        super().__init__(max_active, max_waiting, update_interval, max_per_client, limiter=limiter)
        self.clients = ClientHolds(max_per_client)
        self._dirty = asyncio.Event()

    def has_room(self) -> bool:
        if not self.waiting and self.free_slots:
            return True
        return len(self.waiting) < self.max_waiting

    async def enter(self, ticket: Ticket) -> str | None:
        # A client at its cap is told so even when the line is full too: it is what it can fix.
        refusal = self.clients.hold(ticket.client, ticket.request_id, ticket.client_groups)
        if refusal is not None:
            return refusal
        if not self.has_room():
            self.clients.release(ticket.request_id)
            return "queue_full"
        self.join(ticket)
        return None

    async def hold(self, ticket: Ticket) -> str | None:
        return self.clients.hold(ticket.client, ticket.request_id, ticket.client_groups)

    def client_count(self, client: str) -> int | None:
        return self.clients.count(client)

    def client_refusal(self, client: str, groups: Sequence[Group] = ()) -> str | None:
        return self.clients.refusal(client, groups)

    def requeue(self, ticket: Ticket) -> None:
        self.join(ticket)

    def join(self, ticket: Ticket) -> None:
        """Admit the ticket at once if nobody is ahead and a slot is free, else line it up."""
        if not self.waiting and self.free_slots:
            self._admit(ticket)
            ticket.place.position = 1
            return
        self.waiting[ticket.request_id] = ticket
        ticket.place.position = len(self.waiting)
        self.pressed = True

    def apply_limit(self, change: Change) -> None:
        """A higher limit admits waiters at once; a lower one stops no answer, admits fewer."""
        super().apply_limit(change)
        self._admit_next()

    def leave(self, ticket: Ticket) -> None:
        rid = ticket.request_id
        self.clients.release(rid)
        if self.waiting.pop(rid, None) is not None:
            self._dirty.set()
        elif self.active.pop(rid, None) is not None:
            self._admit_next()

    def _admit_next(self) -> None:
        while self.waiting and self.free_slots:
            _, ticket = self.waiting.popitem(last=False)
            self._admit(ticket)
            self._dirty.set()

    def update_positions(self) -> int:
        """Give every waiter its current position; wake those whose position changed."""
        changed = 0
        for position, ticket in enumerate(self.waiting.values(), 1):
            changed += self._set_position(ticket, position)
        return changed

    async def run(self) -> None:
        """Push position changes to waiters, coalesced to one pass per interval."""
        while True:
            await self._dirty.wait()
            self.update_positions()
            # Cleared once done: a pass that failed is run again when the task restarts.
            self._dirty.clear()
            await asyncio.sleep(self.update_interval)
