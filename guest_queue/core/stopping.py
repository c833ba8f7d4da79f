"""Stopping requests: one at a time (a slot comes back once its workflow has
really stopped) and all at once (the drain at shutdown), and the tasks a queue owns."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import events as ev
from .backends.base import Admission, Ticket
from .config import QueueConfig
from .drive import StopReason
from .endings import Ending
from .live import LiveTickets
from .records import Status

logger = logging.getLogger("guest_queue")

#: Longest a cancelled workflow keeps its slot while it cleans up.
STOP_GRACE_SEC = 5.0
#: ``close()`` cancels the tasks it owns up to this many times, waiting this long each time.
CLOSE_CANCEL_ROUNDS = 3
CLOSE_CANCEL_WAIT_SEC = 1.0


#: Ends a request with the event its stream must still send (``QueueManager.end``).
EndRequest = Callable[[Ticket, Status, str, str], None]


class QueueStopper:
    """Whether the queue accepts requests, the tasks it owns, and how they stop."""

    def __init__(
        self, config: QueueConfig, admission: Admission, live: LiveTickets, end: EndRequest
    ) -> None:
        self.config = config
        self.admission = admission
        self.live = live
        self.end = end
        self.accepting = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self.background: set[asyncio.Task[Any]] = set()
        self.workflow_tasks: set[asyncio.Task[None]] = set()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._drain: asyncio.Task[None] | None = None
        #: Awaited when the drain begins, before waiting requests are ended.
        self.before_drain: Callable[[], Awaitable[None]] | None = None
        self._idle = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a background task, cancelled by ``close()``.

        It runs in a context of its own, not in a copy of the request's that spawned
        it: it may outlive that request (an answer others follow, a cache write), and
        what the request's context holds (its server's per-request sync threads, say)
        ends with the request.
        """
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def track_workflow(self, ticket: Ticket, task: asyncio.Task[None]) -> None:
        """The ticket's workflow task: the drain waits for it to stop."""
        ticket.drive.task = task
        self.workflow_tasks.add(task)
        task.add_done_callback(functools.partial(self._workflow_done, ticket))

    def _workflow_done(self, ticket: Ticket, task: asyncio.Task[None]) -> None:
        self.workflow_tasks.discard(task)
        # A stopped task is as good as none (``release_slot_when_stopped``, ``cancel_task``);
        # forgetting it breaks the cycle ticket -> task -> its context -> the request's
        # noted tickets -> ticket, which only the garbage collector's slowest pass frees.
        drive = ticket.drive
        if drive.task is task:
            drive.task = None

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await ``closer`` in ``close()``, after the drain."""
        self._closers.append(closer)

    def begin_drain(self) -> None:
        """Start draining (idempotent); safe to call from any thread or a signal handler."""
        if self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self.accepting = False
            self._drain = self.spawn(self._drain_requests(self.config.shutdown_grace_sec))

    async def drain(self) -> None:
        """Stop accepting, end waiting streams and give processing ones the grace period."""
        self._start_drain()
        assert self._drain is not None
        await asyncio.shield(self._drain)

    async def close(self) -> None:
        """Drain, then stop every task the manager owns."""
        await self.drain()
        pending = {t for t in self.background if t is not self._drain}
        for _ in range(CLOSE_CANCEL_ROUNDS):
            if not pending:
                break
            # A library may swallow a cancel (redis-py's socket reads): cancel again.
            for task in pending:
                task.cancel()
            done, pending = await asyncio.wait(pending, timeout=CLOSE_CANCEL_WAIT_SEC)
            for task in done:
                if not task.cancelled():
                    task.exception()  # Retrieved: it was stopping anyway.
        if pending:
            logger.warning("%d background task(s) did not stop when cancelled", len(pending))
        await self.admission.close()
        for closer in self._closers:
            try:
                await closer()
            except Exception:
                logger.exception("Closing %r failed", closer)

    async def _drain_requests(self, grace: float) -> None:
        if self.before_drain is not None:
            try:
                await self.before_drain()
            except Exception:
                logger.exception("Preparing the drain failed")
        for ticket in list(self.admission.waiting.values()):
            self.end(ticket, Status.CANCELLED, ev.CODE_SHUTTING_DOWN, "The server is restarting.")
        if self.admission.active:
            self._idle.clear()
            try:
                async with asyncio.timeout(grace):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning("%d request(s) cut off at shutdown", len(self.admission.active))
        for ticket in list(self.admission.active.values()):
            ticket.drive.stop = StopReason.SHUTTING_DOWN
            self.cancel_task(ticket)
        # Streams answer an interrupt at once; end any whose stream is gone.
        await asyncio.sleep(0.05 if self.admission.active else 0)
        for ticket in self.live:
            self.end(ticket, Status.CANCELLED, ev.CODE_SHUTTING_DOWN, "The server is restarting.")
        # Every workflow has been told to stop; wait for their cleanup, but not forever.
        if self.workflow_tasks:
            _, stubborn = await asyncio.wait(self.workflow_tasks, timeout=STOP_GRACE_SEC)
            for task in stubborn:
                task.cancel()
            if stubborn:
                logger.warning("%d workflow(s) did not stop when cancelled", len(stubborn))

    def ended(self, ticket: Ticket, ending: Ending) -> None:
        """A request ended: its slot (or place) goes back once its workflow has stopped."""
        self.release_slot_when_stopped(ticket)

    def release_slot_when_stopped(self, ticket: Ticket) -> None:
        """Give the ticket's slot (or place) back once its workflow has really stopped.

        A workflow that has completed is left to wind down; any other is
        cancelled and still runs its cleanup (closing an upstream connection,
        say). The next request starts only after that, so no more than the
        limit ever run at once. One that will not stop is cancelled, and its
        slot given back, after ``STOP_GRACE_SEC``.
        """
        task = ticket.drive.task
        if task is None or task.done():
            self._release_slot(ticket)
            return
        if ticket.record.status is not Status.COMPLETED:
            task.cancel()

        def overdue() -> None:
            logger.warning(
                "Workflow for request %s still running %g s after it was stopped; "
                "its slot is given back",
                ticket.request_id,
                STOP_GRACE_SEC,
            )
            task.cancel()
            self._release_slot(ticket)

        timer = task.get_loop().call_later(STOP_GRACE_SEC, overdue)

        def stopped(_: asyncio.Task[None]) -> None:
            timer.cancel()
            self._release_slot(ticket)

        task.add_done_callback(stopped)

    def _release_slot(self, ticket: Ticket) -> None:
        self.admission.leave(ticket)
        if not self.admission.active:
            self._idle.set()

    def cancel_task(self, ticket: Ticket) -> None:
        task = ticket.drive.task
        if task is not None and not task.done():
            task.cancel()
