"""The queue manager: accepts requests, admits them in order and drives their streams."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from ..workflows.base import Workflow, WorkflowRequest
from . import events as ev
from .answers.cache import AnswerCache
from .answers.sharing import AnswerSharing, serve_from
from .availability import AvailabilityProbe
from .backends.base import Admission, Ticket
from .backends.local import LocalAdmission
from .config import QueueConfig
from .errors import NotAccepting, QueueFull, Refused, Unavailable
from .records import RecentRequests, RequestRecord, Status
from .reporting import QueueReporting
from .runner import Channel, run_workflow
from .stats import QueueStats
from .stopping import QueueStopping
from .stream import DISCONNECTED, RequestStream

logger = logging.getLogger("guest_queue")

Listener = Callable[[RequestRecord], None]


class QueueManager(QueueReporting, QueueStopping):
    """One process's queue: a fixed number of slots in front of one workflow."""

    def __init__(
        self, config: QueueConfig, workflow: Workflow, *, cache: AnswerCache | None = None
    ) -> None:
        self.config = config
        self.workflow = workflow
        self.admission = self._build_admission()
        self.stats = QueueStats()
        self.recent = RecentRequests(config.history_limit)
        self.accepting = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tickets: dict[str, Ticket] = {}
        #: Accepted tickets outside the admission queue: cache replays and followers.
        self._detached: set[Ticket] = set()
        self.sharing = (
            AnswerSharing(cache, config.cache_similarity, self._spawn)
            if cache is not None
            else None
        )
        self._listeners: list[Listener] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._workflow_tasks: set[asyncio.Task[None]] = set()
        self.availability = AvailabilityProbe(workflow, config.availability_cache_sec)
        self._drain: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the background tasks on the running loop (idempotent)."""
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._spawn(self.admission.run())
        self._spawn(self._release_unclaimed())

    def _build_admission(self) -> Admission:
        config = self.config
        if config.backend == "redis":
            from .backends.redis import RedisAdmission

            return RedisAdmission(config, on_lost=self._lost, snapshot=self._snapshot)
        return LocalAdmission(
            config.max_concurrent, config.max_queue_size, config.position_update_interval_sec
        )

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each request's record once it reaches its final status."""
        self._listeners.append(listener)

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await ``closer`` in ``close()``, after the drain (to flush what listeners kept)."""
        self._closers.append(closer)

    # -- admission --------------------------------------------------------------

    async def submit(self, query: str, *, client_hint: str | None = None) -> Ticket:
        """Accept a request or raise a ``Refused`` subclass saying why not."""
        self.start()
        if not self.accepting:
            self.stats.rejected += 1
            raise NotAccepting("The server is restarting; please try again.", 5)
        record = RequestRecord(request_id=str(uuid.uuid4()), query=query, client_hint=client_hint)
        ticket = Ticket(record)
        if self.sharing is not None:
            key, hit = await self.sharing.find(query)
            if hit is not None:
                serve_from(ticket, hit)
                return self._accept(ticket, detached=True)
            if self.accepting and self.sharing.follow(ticket, key):
                return self._accept(ticket, detached=True)
        if not await self.is_available():
            self.stats.rejected += 1
            raise Unavailable(
                "The assistant is temporarily unavailable.",
                math.ceil(self.config.availability_cache_sec) or 1,
            )
        try:
            entered = self.accepting and await self.admission.enter(ticket)
        except Refused:
            self.stats.rejected += 1
            raise
        if not entered:
            self.stats.rejected += 1
            raise QueueFull(
                "Too many guests are asking right now; please try again shortly.",
                self.stats.retry_after(self.config.max_concurrent, self.config.request_timeout_sec),
            )
        self._lead(ticket)
        return self._accept(ticket, detached=False)

    def _accept(self, ticket: Ticket, *, detached: bool) -> Ticket:
        ticket.record.arrival_position = max(ticket.position, 1)
        self._tickets[ticket.request_id] = ticket
        if detached:
            self._detached.add(ticket)
        self.stats.total += 1
        return ticket

    def _lead(self, ticket: Ticket) -> None:
        """A ticket in line for a slot answers its question for identical ones that follow."""
        if self.sharing is not None and ticket.cache_key is not None:
            self.sharing.lead(ticket)

    async def is_available(self) -> bool:
        """Whether the workflow's service is up, cached for a few seconds."""
        return await self.availability.check()

    # -- streams ------------------------------------------------------------------

    def events(self, ticket: Ticket) -> AsyncIterator[ev.Event | None]:
        """The request's events, ``None`` for a heartbeat; cleans up however it ends."""
        return RequestStream(self, ticket).events()

    def stream(self, ticket: Ticket) -> RequestStream:
        """The request's stream, for consumers that also ask what is ready to send."""
        return RequestStream(self, ticket)

    def start_workflow(self, ticket: Ticket, channel: Channel) -> None:
        """Run the workflow for an admitted ticket in its own task, feeding ``channel``."""
        record = ticket.record
        request = WorkflowRequest(request_id=record.request_id, query=record.query)
        task = asyncio.create_task(
            run_workflow(self.workflow, request, channel, self.availability.mark_down)
        )
        ticket.task = task
        self._workflow_tasks.add(task)
        task.add_done_callback(self._workflow_tasks.discard)

    # -- endings ------------------------------------------------------------------

    def release(self, ticket: Ticket) -> None:
        """End the request if nothing else did: its client has gone (idempotent)."""
        self.finish(ticket, Status.CANCELLED, DISCONNECTED, "The client went away.")

    def release_threadsafe(self, ticket: Ticket) -> None:
        """``release`` from another thread (a response's ``close()`` runs in one)."""
        # A finished request stays finished: skip waking the loop for the common case.
        if ticket.record.status.is_terminal:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.release, ticket)

    def end(self, ticket: Ticket, status: Status, code: str, message: str) -> None:
        """Finish a ticket with the error or timeout event its stream must still send."""
        if ticket.record.status.is_terminal:
            return
        if status is Status.TIMEOUT:
            waited = code == "queue_timeout"
            limit = self.config.max_queue_wait_sec if waited else self.config.request_timeout_sec
            ticket.terminal_event = ev.timeout_event(
                limit, waiting=waited, fallback=self.config.timeout_fallback
            )
            message = ticket.terminal_event.data["error"]
        else:
            ticket.terminal_event = ev.error_event(code, message)
        self.finish(ticket, status, code, message)
        ticket.wake.set()

    def finish(
        self, ticket: Ticket, status: Status, code: str | None = None, message: str | None = None
    ) -> None:
        """Move the ticket to its final status: once, whatever path gets here first."""
        record = ticket.record
        if record.status.is_terminal:
            return
        record.mark_finished(status, code, message)
        if status is Status.TIMEOUT and record.started_mono is not None:
            record.add_answer(self.config.timeout_fallback)
        self._tickets.pop(record.request_id, None)
        self._detached.discard(ticket)
        self._release_slot_when_stopped(ticket)
        if self.sharing is not None:
            # Followers of a leader that did not complete go back in line themselves.
            for follower in self.sharing.finished(ticket):
                if not self.accepting:
                    self.end(follower, Status.CANCELLED, ev.CODE_SHUTTING_DOWN, "Restarting.")
                elif not self.sharing.follow(follower, follower.cache_key or ""):
                    self._detached.discard(follower)
                    self._lead(follower)
                    self.admission.requeue(follower)
                follower.wake.set()
        self.stats.record_finished(record)
        self.recent.add(record)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("Request listener failed")

    def _lost(self, ticket: Ticket, message: str) -> None:
        """The shared queue no longer holds the ticket's place or slot: end it."""
        if ticket.admitted:
            # Its slot may already be someone else's: stop the workflow now.
            self._cancel_task(ticket)
        self.end(ticket, Status.FAILED, ev.CODE_UNAVAILABLE, message)

    async def _release_unclaimed(self) -> None:
        """Release tickets whose stream never started (the client left before it could)."""
        limit = self.config.unclaimed_ticket_sec
        while True:
            await asyncio.sleep(min(5.0, limit))
            cutoff = time.monotonic() - limit
            for ticket in [t for t in self._tickets.values() if not t.claimed]:
                if ticket.record.created_mono < cutoff:
                    self.finish(ticket, Status.CANCELLED, "abandoned", "Stream never started.")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
