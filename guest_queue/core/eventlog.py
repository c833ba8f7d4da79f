"""A request's events as an append-only log that readers attach to and resume from.

Each event gets the next sequence number (1, 2, 3, …). The log is bounded in
events and bytes: the oldest events are dropped once it is over either cap,
but never one the attached reader has not sent yet (the writer waits for it
instead, as a plain stream waits for a slow client). A reader asking for
events that were dropped gets ``LogTrimmed``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .events import Event

#: What an event costs beside its text: the JSON keys, the request id, the seq.
EVENT_OVERHEAD_BYTES = 96


class LogTrimmed(Exception):
    """The events a reader asked for are no longer in the log."""


def event_size(event: Event) -> int:
    """Roughly how many bytes the event takes once encoded."""
    data = event.data
    return EVENT_OVERHEAD_BYTES + (len(data) if isinstance(data, str) else 160)


class EventLog:
    """The events of one request: numbered, bounded, awaitable."""

    __slots__ = (
        "_changed",
        "_entries",
        "finished",
        "last_seq",
        "max_bytes",
        "max_events",
        "pinned",
        "size",
    )

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._entries: deque[tuple[int, Event, int]] = deque()
        self.last_seq = 0
        self.size = 0
        #: The last seq the attached reader has sent; later events are never dropped.
        self.pinned: int | None = None
        #: True once nothing more will be appended (the terminal event is in, or the
        #: request ended with nobody to tell).
        self.finished = False
        self._changed = asyncio.Event()

    @property
    def first_seq(self) -> int:
        """The seq of the oldest event kept (``last_seq + 1`` when empty)."""
        return self._entries[0][0] if self._entries else self.last_seq + 1

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, event: Event) -> int:
        """Add the next event; returns its seq."""
        self.last_seq += 1
        size = event_size(event)
        self._entries.append((self.last_seq, event, size))
        self.size += size
        self.finished = self.finished or event.is_terminal
        self._trim()
        self._notify()
        return self.last_seq

    @property
    def full(self) -> bool:
        """Over a cap with nothing left to drop: the writer should wait for the reader."""
        return len(self._entries) > self.max_events or self.size > self.max_bytes

    def read_after(self, seq: int) -> list[tuple[int, Event]]:
        """The events after ``seq``, oldest first; ``LogTrimmed`` if some are gone."""
        if seq + 1 < self.first_seq:
            raise LogTrimmed(seq)
        start = seq + 1 - self.first_seq
        if start >= len(self._entries):
            return []
        entries, count = self._entries, len(self._entries) - start
        if count <= start:
            # A reader keeping up wants the last few: walk from the end, copy only those.
            tail = list(itertools.islice(reversed(entries), count))
            tail.reverse()
        else:
            tail = list(itertools.islice(entries, start, None))
        return [(s, e) for s, e, _ in tail]

    def pin(self, seq: int | None) -> None:
        """The attached reader has sent up to ``seq`` (None: nobody is attached)."""
        self.pinned = seq
        self._trim()
        self._notify()

    def close(self) -> None:
        """Nothing more will be appended."""
        self.finished = True
        self._notify()

    def changed(self) -> asyncio.Event:
        """An event set at the next change (append, pin, close); take it before awaiting."""
        return self._changed

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _trim(self) -> None:
        entries, pinned = self._entries, self.pinned
        while entries and (len(entries) > self.max_events or self.size > self.max_bytes):
            seq, _, size = entries[0]
            if pinned is not None and seq > pinned:
                return
            entries.popleft()
            self.size -= size


class SharedLogs(Protocol):
    """Where a shared queue keeps resumable requests' logs, so any process can read them.

    The process driving a request appends; readers on any process read after a seq
    and block for new events. ``None`` from ``state`` means never seen.
    """

    def append(self, request_id: str, seq: int, event: Event) -> None:
        """Add the event (in the background, in order; a failure is logged, not raised)."""

    def touch(self, request_id: str) -> None:
        """Keep a log whose request is still alive (waiting long) from expiring."""

    def drop(self, request_id: str) -> None:
        """Forget a finished log before its grace ends (after what was appended to it);
        its state turns ``"expired"``."""

    async def state(self, request_id: str) -> str | None:
        """``"live"`` (its log is there), ``"expired"`` (it was), or None (unknown)."""

    async def read(self, request_id: str, after: int, block_sec: float) -> list[tuple[int, Event]]:
        """The events after ``after``, waiting up to ``block_sec`` for some; trimmed → error."""

    async def bounds(self, request_id: str) -> tuple[int, int] | None:
        """The first and last seq the log still holds; None if it holds none."""

    async def claim(self, request_id: str, ttl_sec: float) -> int:
        """A reader attaches: a claim numbered above every earlier one, announced to every
        process (their older readers of the request close), held for ``ttl_sec``."""

    async def renew(self, request_id: str, number: int, ttl_sec: float) -> bool:
        """Hold the claim ``ttl_sec`` longer; False if a newer claim replaced it."""

    async def unclaim(self, request_id: str, number: int) -> None:
        """The reader has gone: give the claim up, unless a newer one replaced it."""

    async def newest_claim(self, request_id: str) -> int:
        """The number of the newest claim still held (0: none)."""

    async def attached(self, request_id: str) -> bool:
        """Whether a reader on any process holds a claim (it has not lapsed)."""

    async def cancel(self, request_id: str) -> None:
        """Ask every process to cancel the request (the one holding it does)."""

    async def listen(
        self, on_cancel: Callable[[str], None], on_claim: Callable[[str, int], None]
    ) -> None:
        """Call ``on_cancel`` with each request id any process asked to cancel, and
        ``on_claim`` with each new claim (``("", 0)``: some may have been missed); runs
        forever."""
