"""First-come, first-served admission to a fixed number of slots.

``Admission`` is what the manager relies on; ``local.LocalAdmission`` keeps the
queue in this process, ``redis.RedisAdmission`` shares one across processes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..answers.cache import CachedAnswer
from ..records import RequestRecord

if TYPE_CHECKING:
    from ..events import Event


class Ticket:
    """A request's place in the queue, shared by the queue and the request's stream."""

    __slots__ = (
        "admitted",
        "answer_parts",
        "cache_key",
        "claimed",
        "followers",
        "interrupt",
        "leader",
        "position",
        "queue_score",
        "record",
        "replay",
        "task",
        "terminal_event",
        "wake",
    )

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.position = 0
        #: The ticket's place in a shared queue (its sort key there), once it has one.
        self.queue_score: str | None = None
        self.admitted = False
        self.claimed = False
        #: Set from outside (shutdown) to make the stream stop with this error code.
        self.interrupt: str | None = None
        #: The event the stream must end with when the queue ended the request itself.
        self.terminal_event: Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        # Answer cache and single flight (all None/empty when the cache is off):
        self.cache_key: str | None = None
        #: The whole answer so far, kept only to be cached when it completes.
        self.answer_parts: list[str] | None = None
        #: A finished answer this ticket streams instead of running the workflow.
        self.replay: CachedAnswer | None = None
        #: The ticket already answering the same question, which this one follows.
        self.leader: Ticket | None = None
        self.followers: list[Ticket] = []

    @property
    def request_id(self) -> str:
        return self.record.request_id


class Admission:
    """The slots and the line in front of them, as the manager and the streams see them.

    ``waiting`` and ``active`` hold this process's tickets; ``queue_size`` and
    ``free_slots`` describe the whole queue (the same thing for a local one).
    """

    name = "local"

    def __init__(self, max_active: int, max_waiting: int, update_interval: float) -> None:
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.update_interval = update_interval
        self.waiting: OrderedDict[str, Ticket] = OrderedDict()
        self.active: dict[str, Ticket] = {}

    @property
    def queue_size(self) -> int:
        """Tickets waiting in the whole queue."""
        return len(self.waiting)

    @property
    def active_count(self) -> int:
        """Tickets holding a slot in the whole queue."""
        return len(self.active)

    @property
    def free_slots(self) -> int:
        return max(0, self.max_active - self.active_count)

    async def enter(self, ticket: Ticket) -> bool:
        """Admit or line up a new ticket; False when the line is full."""
        raise NotImplementedError

    def requeue(self, ticket: Ticket) -> None:
        """Line up an already accepted ticket again, whatever the line's length."""
        raise NotImplementedError

    def leave(self, ticket: Ticket) -> None:
        """Take the ticket out, wherever it is, and let the next one in. Idempotent."""
        raise NotImplementedError

    async def run(self) -> None:
        """The background work that keeps positions current; runs until cancelled."""
        raise NotImplementedError

    async def reachable(self) -> bool:
        """Whether the queue's shared state can be reached (always, for a local one)."""
        return True

    async def locate(self, request_id: str) -> dict[str, Any] | None:
        """A request live in another process sharing the queue; None for a local queue."""
        return None

    async def shared_status(self) -> dict[str, Any] | None:
        """The whole queue's line, slots and other processes' figures; None for a local one."""
        return None

    async def close(self) -> None:
        """Give back what the queue holds outside this process."""

    def _admit(self, ticket: Ticket) -> None:
        self.active[ticket.request_id] = ticket
        ticket.record.mark_started()
        ticket.admitted = True
        ticket.position = 0
        ticket.wake.set()

    def _set_position(self, ticket: Ticket, position: int) -> bool:
        """Give a waiter (and its followers) a new position; True when it changed."""
        if ticket.position == position:
            return False
        ticket.position = position
        ticket.wake.set()
        for follower in ticket.followers:
            follower.position = position
            follower.wake.set()
        return True
