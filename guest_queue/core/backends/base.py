"""First-come, first-served admission to a fixed number of slots.

``Admission`` is what the manager relies on; ``local.LocalAdmission`` keeps the
queue in this process, ``redis.RedisAdmission`` shares one across processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..answers.remote import SharedAnswers
from ..answers.share import Share
from ..concurrency import Change, LimitController
from ..config import ConfigProblem, QueueConfig
from ..drive import Drive
from ..drive import StopReason as StopReason  # Its home was here: still importable from here.
from ..eventlog import SharedLogs
from ..fairness import Group
from ..ordering import Ordering
from ..records import RequestRecord
from ..workflow import WorkflowRequest

if TYPE_CHECKING:
    from ..endings import Ending

logger = logging.getLogger("guest_queue")


class Place:
    """Admission's part of a request: where it stands. Only the backends write it.

    The two events are what streams wait on: ``wake`` the ticket's own stream (the
    backend sets it on admission and on a move; the parts that end or serve a ticket
    set it too), ``moved`` its followers' (a move, or its answer growing).
    """

    __slots__ = ("admitted", "limit_version", "moved", "position", "wake")

    def __init__(self) -> None:
        #: Place in line counting from 1 (0 once admitted, 1 when admitted on arrival).
        self.position = 0
        #: Holds a slot (the workflow may start).
        self.admitted = False
        #: The limit's version when it was admitted: its speed is a sample of that limit's.
        self.limit_version = 0
        self.wake = asyncio.Event()
        #: Set when the position changes: its followers wait on it (one event for all of
        #: them, so a move costs the same however many follow).
        self.moved = asyncio.Event()


class Ticket:
    """One accepted request: what it asks and how it ended, and each part's state of it.

    ``request`` (the workflow's input) never changes; ``place`` is admission's,
    ``share`` the answer sharing's, ``drive`` the driver's (the stream's and the
    stopper's); ``record`` and ``ending`` are the lifecycle's (``QueueManager.finish``).
    """

    __slots__ = (
        "drive",
        "ending",
        "place",
        "record",
        "request",
        "share",
    )

    def __init__(self, record: RequestRecord, request: WorkflowRequest | None = None) -> None:
        self.record = record
        #: What the workflow is given (the question, the guest's language, earlier turns):
        #: built once when the request is accepted, never changed.
        if request is None:
            request = WorkflowRequest(record.request_id, record.query)
        self.request = request
        #: How the request ended, once it has (the first ending wins).
        self.ending: Ending | None = None
        #: Where it stands in line (admission's).
        self.place = Place()
        #: Its part in a shared answer (the answer cache and single flight).
        self.share = Share()
        #: How it is driven: its workflow's task, whether its stream has started, a stop.
        self.drive = Drive()

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def client(self) -> str:
        """The opaque id of the client that asked (empty when unknown)."""
        return self.record.client_hint or ""

    @property
    def client_groups(self) -> tuple[Group, ...]:
        """The wider groups the client belongs to, each with its cap's multiple."""
        return self.record.client_groups

    @property
    def position(self) -> int:
        """Place in line counting from 1; a follower shares its leader's (read, not copied)."""
        leader = self.share.leader
        if leader is not None:
            return max(leader.place.position, 1)
        return self.place.position

    @property
    def wake_event(self) -> asyncio.Event:
        """What the ticket's stream waits on: its leader's moves while following, else its own."""
        leader = self.share.leader
        return leader.place.moved if leader is not None else self.place.wake


class WindowCounter(Protocol):
    """Fixed-window counters shared by every process that counts in the same place."""

    async def count(self, keys: Sequence[str], limits: Sequence[int], ttl_sec: int) -> int:
        """Count one event under each key in turn (narrowest first), each key living
        ``ttl_sec`` from its first count, and stop at the first one now over its limit:
        its index from 1, or 0 when none is. Exact under any concurrency."""
        ...


#: Called when a backend no longer holds a ticket's place or slot (the ticket, why).
LostCallback = Callable[[Ticket, str], None]
#: This process's ``queue/status`` figures, for backends that publish them to the others.
Snapshot = Callable[[], dict[str, Any]]


class Admission(ABC):
    """The slots and the line in front of them, as the manager and the streams see them.

    ``waiting`` and ``active`` hold this process's tickets; ``queue_size`` and
    ``free_slots`` describe the whole queue (the same thing for a local one).

    A backend is chosen by ``QueueConfig.backend``: a short name or the dotted path
    of a subclass (see ``backends.backend_class``). It is built by ``create`` and
    validates its own ``QueueConfig.backend_options`` in ``check``.
    """

    name = "local"

    @classmethod
    def create(cls, config: QueueConfig, *, on_lost: LostCallback, snapshot: Snapshot) -> Admission:
        """The backend for ``config``; ``on_lost`` and ``snapshot`` serve shared backends."""
        return cls(
            config.max_concurrent,
            config.max_queue_size,
            config.position_update_interval_sec,
            config.max_per_client,
            limiter=limiter_for(config),
            ordering=ordering_of(config),
        )

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> list[ConfigProblem]:
        """What is wrong with ``options`` (``QueueConfig.backend_options``) for this backend."""
        return []

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
        #: Decides the limit in use (fixed, but for busy spells, unless given an adaptive one).
        self.limiter = limiter or LimitController(max_active, max_active, auto=False)
        #: The limit in use: how many tickets may hold a slot at once (the limiter's).
        self.max_active = self.limiter.limit
        #: How the line is ordered (tiers, fairness); plain FIFO by default.
        self.ordering = ordering if ordering is not None else Ordering(slots=max_active)
        # The order's pace follows the limit in use (an "auto" limit starts at its floor).
        self.ordering.slots = max(1, self.max_active)
        self.max_waiting = max_waiting
        self.update_interval = update_interval
        self.max_per_client = max_per_client
        self.waiting: OrderedDict[str, Ticket] = OrderedDict()
        self.active: dict[str, Ticket] = {}
        #: Problems of the set-up found at start-up, shown in ``health``.
        self.warnings: list[str] = []
        #: Called with a request another process handed off that nobody adopted in time,
        #: once, in one process (shared queues): it must be recorded as ended.
        self.on_abandoned: Callable[[Ticket], None] | None = None
        #: Called with each of this process's tickets as it takes a slot (the estimates
        #: learn the drain rate and their error from it).
        self.on_admitted: Callable[[Ticket], None] | None = None
        #: Whether every slot was taken (or someone waited) since the limiter last decided.
        self.pressed = False
        #: The timer that steps a fixed limit back after a busy upstream's wait.
        self._recovery: asyncio.TimerHandle | None = None

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

    @abstractmethod
    async def enter(self, ticket: Ticket) -> str | None:
        """Admit or line up a new ticket; else the refusal's code (``queue_full``,
        ``client_limit``: the ticket's client already has its cap of requests open,
        ``network_limit``: one of its groups has its own)."""

    @abstractmethod
    async def hold(self, ticket: Ticket) -> str | None:
        """Count a ticket that takes no place (a follower, a cache replay) against its
        client and groups; None once counted, else the refusal's code (``client_limit``,
        ``network_limit``). ``leave`` releases it."""

    def client_count(self, client: str) -> int | None:
        """Requests the client has open, when this process knows it (None: ask Redis)."""
        return None

    def client_refusal(self, client: str, groups: Sequence[Group] = ()) -> str | None:
        """The refusal's code when this process knows the client or one of its groups is
        at its cap (None: below it, or only Redis knows)."""
        return None

    def rate_counter(self) -> WindowCounter | None:
        """Where every process sharing the queue counts rates; None: the site counts them
        elsewhere (its cache)."""
        return None

    @abstractmethod
    def requeue(self, ticket: Ticket, *, front: bool = False) -> None:
        """Line up an already accepted ticket again, whatever the line's length.

        ``front``: it held a slot and its upstream was busy: the slot is given back and it
        waits ahead of everyone waiting (admitted again when a slot is free for it).
        """

    @abstractmethod
    def leave(self, ticket: Ticket) -> None:
        """Take the ticket out, wherever it is, and let the next one in. Idempotent."""

    @abstractmethod
    async def run(self) -> None:
        """The background work that keeps positions current; runs until cancelled."""

    async def reachable(self) -> bool:
        """Whether the queue's shared state can be reached (always, for a local one)."""
        return True

    async def locate(self, request_id: str) -> dict[str, Any] | None:
        """A request live in another process sharing the queue; None for a local queue."""
        return None

    async def shared_status(self) -> dict[str, Any] | None:
        """The whole queue's line, slots and other processes' figures; None for a local one."""
        return None

    async def hand_off(
        self,
        tickets: list[Ticket],
        grace_sec: float,
        followers: Sequence[tuple[Ticket, str]] = (),
    ) -> list[Ticket]:
        """Leave waiting tickets' places for another process to adopt; those handed off.

        ``followers`` (ticket, arrival score) take no place yet: they line up at their score.
        """
        return []

    async def adopt(self, request_id: str) -> Ticket | None:
        """Take over a request another process handed off; None if there is none."""
        return None

    def shared_logs(self) -> SharedLogs | None:
        """Where every process can read resumable requests' logs; None: this process only."""
        return None

    def shared_answers(self) -> SharedAnswers | None:
        """Where processes share answers being produced; None: single flight within this one."""
        return None

    async def close(self) -> None:
        """Give back what the queue holds outside this process (shared backends), and stop
        the timer that steps a shrunk limit back."""
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None

    def line_score(self, ticket: Ticket) -> tuple[str, float] | None:
        """A waiting ticket's sort key in a shared line, and this process's monotonic clock
        when it was given (mapping this process's times onto the line); None: no shared line."""
        return None

    # -- the limit in use -------------------------------------------------------------

    @property
    def limit_version(self) -> int:
        """The version of the limit in use, as this process knows it."""
        return self.limiter.version

    def measured(self, ticket: Ticket) -> None:
        """An admitted ticket's first chunk came: its time from admission is a sample."""
        record = ticket.record
        if record.started_mono is None or record.first_chunk_mono is None:
            return
        if ticket.drive.requeues:
            return  # Re-admitted after a busy upstream: its start waited for the Retry-After.
        if not self.wants_samples():
            return  # A fixed limit at its number: nothing to learn (the common case).
        self.sample(ticket.place.limit_version, record.first_chunk_mono - record.started_mono)

    def wants_samples(self) -> bool:
        """Whether answers' speed matters now: adaptive, or a fixed limit shrunk for a while."""
        return not self.limiter.settled

    def sample(self, version: int, ttfc_sec: float) -> None:
        """Give the limiter one answer's time to first chunk, and apply what it decides."""
        limiter = self.limiter
        limiter.observe(version, ttfc_sec)
        if not limiter.due:
            return
        change = limiter.decide(saturated=self.pressed or bool(self.waiting))
        self.pressed = False  # Demand is judged afresh for each decision.
        if change is not None:
            self.apply_limit(change)

    def upstream_busy(self, retry_after_sec: float) -> None:
        """The workflow's upstream is overloaded: the limit shrinks for a while."""
        change = self.limiter.busy(retry_after_sec)
        if change is not None:
            self.apply_limit(change)
        self._schedule_recovery()

    def _schedule_recovery(self) -> None:
        """A fixed limit shrunk by a busy upstream steps back toward its number on a timer
        (no answer's speed is needed to tell the upstream's wait is over)."""
        limiter = self.limiter
        if limiter.auto or limiter.settled or self._recovery is not None:
            return
        delay = max(0.05, limiter.recovery_at - limiter.clock())
        self._recovery = asyncio.get_running_loop().call_later(delay, self._recover)

    def _recover(self) -> None:
        self._recovery = None
        change = self.limiter.recover()
        if change is not None:
            self.apply_limit(change)
        self._schedule_recovery()

    def apply_limit(self, change: Change) -> None:
        """Use the limiter's new limit (the local queue admits waiters at once on a rise)."""
        self.max_active = change.new
        # The order's pace (fair use over the slots, tiers' spacing) follows the limit in use.
        self.ordering.slots = max(1, change.new)
        log_change(change, self.limiter.mode)

    def concurrency(self) -> dict[str, Any]:
        """How the limit is set, for ``queue/status``."""
        limiter = self.limiter
        return {"mode": limiter.mode, "floor": limiter.floor, "ceiling": limiter.ceiling}

    def _slot_given_back(self, ticket: Ticket) -> float | None:
        """A ticket that held a slot left: the seconds it held it (they feed the order's
        pace ``u``); None when it never started."""
        started = ticket.record.started_mono
        if started is None or self.ordering.plain:
            return None
        held = max(0.0, time.monotonic() - started)
        self.ordering.served(held)
        return held

    def _admit(self, ticket: Ticket) -> None:
        self.active[ticket.request_id] = ticket
        if len(self.active) >= self.max_active:
            self.pressed = True
        ticket.record.mark_started()
        place = ticket.place
        place.limit_version = self.limit_version
        place.admitted = True
        place.position = 0
        place.wake.set()
        if self.on_admitted is not None:
            self.on_admitted(ticket)

    def _set_position(self, ticket: Ticket, position: int) -> bool:
        """Give a waiter a new position; True when it changed. Its followers read the
        position from it and wait on its ``moved`` event: none of them is visited."""
        place = ticket.place
        if place.position == position:
            return False
        place.position = position
        place.wake.set()
        place.moved.set()
        return True


def limiter_for(config: QueueConfig) -> LimitController:
    """The limiter ``config`` asks for: adaptive between its bounds, or fixed."""
    if config.adaptive:
        return LimitController(config.concurrency_floor, config.max_concurrent, auto=True)
    return LimitController(config.max_concurrent, config.max_concurrent, auto=False)


def log_change(change: Change, mode: str) -> None:
    """The limit in use changed: say so, and why, at INFO."""
    logger.info("Concurrency limit %d -> %d (%s): %s", change.old, change.new, mode, change.reason)


def ordering_of(config: QueueConfig) -> Ordering:
    """The line's order for ``config`` (its tiers and fairness)."""
    return Ordering(config.tiers, config.fairness, config.max_concurrent, config.fair_half_life_sec)
