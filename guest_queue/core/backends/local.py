"""This process's own queue: waiting tickets in one insertion-ordered dict.

With the default order (one tier, FIFO) joining, leaving from the middle and
admitting the head are all O(1). With tiers or fairness (``ordering``) the
line is also kept by sort key in a ``SortedList``: O(log n) each. Positions
are recomputed by one notifier task, at most once per interval, so a burst of
departures costs thousands of waiters one update each rather than one per
departure; a request lined up ahead of others wakes it too (their positions grow).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from sortedcontainers import SortedList

from ..concurrency import Change, LimitController
from ..fairness import ClientHolds, Group
from ..ordering import Key, LineKeys, Ordering
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
        ordering: Ordering | None = None,
    ) -> None:
        super().__init__(
            max_active,
            max_waiting,
            update_interval,
            max_per_client,
            limiter=limiter,
            ordering=ordering,
        )
        self.clients = ClientHolds(max_per_client)
        self._dirty = asyncio.Event()
        #: The ordered line (None: plain FIFO, ``waiting``'s own order): (key, request id).
        self._line: SortedList | None = None if self.ordering.plain else SortedList()
        self._keys: dict[str, tuple[Key, str]] = {}
        self._line_keys = LineKeys(self.ordering)

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

    def requeue(self, ticket: Ticket, *, front: bool = False) -> None:
        if not front:
            self.join(ticket)
            return
        # It held a slot and its upstream was busy: the slot back, then ahead of everyone.
        self.active.pop(ticket.request_id, None)
        ticket.place.admitted = False
        self.join(ticket, front=True)
        ticket.place.moved.set()  # its followers stand where it does
        self._admit_next()

    def join(self, ticket: Ticket, *, front: bool = False) -> None:
        """Admit the ticket at once if nobody is ahead and a slot is free, else line it up
        (``front``: ahead of everyone waiting)."""
        if not self.waiting and self.free_slots:
            self._admit(ticket)
            ticket.place.position = 1
            return
        rid = ticket.request_id
        self.waiting[rid] = ticket
        self.pressed = True
        line = self._line
        if line is None:
            if front:
                # Ahead of everyone (of several sent back, the latest first).
                self.waiting.move_to_end(rid, last=False)
                ticket.place.position = 1
                self._dirty.set()
                return
            ticket.place.position = len(self.waiting)
            return
        key = self._line_keys.key(ticket.record.tier, ticket.client, time.monotonic(), front=front)
        entry = (key, rid)
        self._keys[rid] = entry
        line.add(entry)
        ticket.place.position = line.bisect_left(entry) + 1
        if ticket.place.position < len(line):
            self._dirty.set()  # Lined up ahead of others: their positions grew.

    def apply_limit(self, change: Change) -> None:
        """A higher limit admits waiters at once; a lower one stops no answer, admits fewer."""
        super().apply_limit(change)
        self._admit_next()

    def leave(self, ticket: Ticket) -> None:
        rid = ticket.request_id
        self.clients.release(rid)
        if self.waiting.pop(rid, None) is not None:
            if self._line is not None:
                key, _ = entry = self._keys.pop(rid)
                self._line.remove(entry)
                self._line_keys.withdraw(ticket.record.tier, key)
            self._dirty.set()
        elif self.active.pop(rid, None) is not None:
            held = self._slot_given_back(ticket)
            if held is not None:
                self._line_keys.charge(ticket.client, held, time.monotonic())
            self._admit_next()

    def _admit_next(self) -> None:
        line = self._line
        while self.waiting and self.free_slots:
            if line is None:
                _, ticket = self.waiting.popitem(last=False)
            else:
                _, rid = line.pop(0)
                del self._keys[rid]
                ticket = self.waiting.pop(rid)
            self._admit(ticket)
            self._dirty.set()

    def update_positions(self) -> int:
        """Give every waiter its current position; wake those whose position changed."""
        changed = 0
        if self._line is None:
            for position, ticket in enumerate(self.waiting.values(), 1):
                changed += self._set_position(ticket, position)
            return changed
        waiting = self.waiting
        for position, (_, rid) in enumerate(self._line, 1):
            changed += self._set_position(waiting[rid], position)
        return changed

    async def run(self) -> None:
        """Push position changes to waiters, coalesced to one pass per interval."""
        while True:
            await self._dirty.wait()
            self.update_positions()
            # Cleared once done: a pass that failed is run again when the task restarts.
            self._dirty.clear()
            await asyncio.sleep(self.update_interval)
