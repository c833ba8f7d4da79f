"""The queue manager: accepts requests, admits them in order and drives their streams.

It is composed of narrow parts: the backend (``admission``) holds the line and
the slots, ``reporter`` answers what the queue knows, ``stopper`` owns the
tasks and the drain, ``sharing`` the answer cache and single flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from . import events as ev
from .answers.cache import AnswerCache
from .answers.relay import AnswerRelay
from .answers.sharing import AnswerSharing, RemoteLeader, serve_from
from .anywhere import RequestsAnywhere
from .availability import AvailabilityProbe
from .backends import backend_class
from .backends.base import Ticket
from .config import QueueConfig
from .drive import StopReason
from .endings import Ending
from .errors import ClientLimited, NotAccepting, QueueFull, Refused, Unavailable
from .estimate import WaitEstimate, WaitEstimator
from .fairness import NETWORK_LIMIT
from .handoff import HandOff
from .live import LiveTickets
from .records import RecentRequests, RequestRecord, Status
from .reporting import QueueReporter
from .resume import Resumable, Resumes
from .runner import Channel, run_workflow
from .stats import QueueStats
from .stopping import QueueStopper
from .stream import CANCELLED_MESSAGE, DISCONNECTED, RequestStream, drive
from .supervise import supervised
from .waits import Waits
from .workflow import Workflow, WorkflowRequest

logger = logging.getLogger("guest_queue")

Listener = Callable[[RequestRecord], None]
#: A part told of each request's ending (the ticket, how it ended).
EndObserver = Callable[[Ticket, Ending], None]

#: Times a request goes back in line because its upstream was busy (``WorkflowBusy``)
#: before it ends with the upstream's error.
MAX_BUSY_RETRIES = 3
#: How long a busy upstream that named no time (no ``Retry-After``) is given.
BUSY_RETRY_SEC = 1.0


class QueueManager:
    """One process's queue: a fixed number of slots in front of one workflow."""

    def __init__(
        self, config: QueueConfig, workflow: Workflow, *, cache: AnswerCache | None = None
    ) -> None:
        self.config = config
        self.workflow = workflow
        self.stats = QueueStats()
        self.recent = RecentRequests(config.history_limit)
        self.live = LiveTickets()
        backend = backend_class(config.backend)
        self.admission = backend.create(config, on_lost=self._lost, snapshot=self._snapshot)
        self.stopper = QueueStopper(config, self.admission, self.live, self.end)
        self.reporter = QueueReporter(
            config, self.admission, self.stats, self.recent, self.live, lambda: self.accepting
        )
        self.sharing = (
            AnswerSharing(cache, config.cache_similarity, self.stopper.spawn, config.max_queue_size)
            if cache is not None
            else None
        )
        answers = self.admission.shared_answers()
        #: Single flight across the processes sharing the queue (a shared backend's).
        self.relay = (
            AnswerRelay(
                self.sharing, answers, self.stopper.spawn, self._fall_back, self._known_here
            )
            if self.sharing is not None and answers is not None
            else None
        )
        self._listeners: list[Listener] = []
        #: Called, in order, with each request that ends (``finish``).
        self._observers = self._end_observers()
        self.resumes = Resumes(
            config, self.events, self.stopper.spawn, self.admission.shared_logs()
        )
        #: The drain's hand-off of waiting resumable requests, and adopting others'.
        self.handoff = HandOff(
            config,
            self.admission,
            self.resumes,
            self.sharing,
            self.live,
            self.stats,
            self.stopper,
            self.finish,
        )
        self.stopper.before_drain = self.handoff.hand_off
        self.admission.on_abandoned = self.handoff.abandoned
        #: Resuming, cancelling and finding requests in whichever process holds them.
        self.anywhere = RequestsAnywhere(
            self.resumes,
            self.admission,
            self.live,
            self.reporter,
            self.stopper,
            self.handoff,
            self.cancel,
        )
        self.waits = Waits(config, self.admission, self.stats)
        self.admission.on_admitted = self.waits.admitted
        self._warnings: list[str] = []
        self.availability = AvailabilityProbe(workflow, config.availability_cache_sec)

    # -- life cycle -------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the queue runs on, once started."""
        return self.stopper.loop

    @property
    def accepting(self) -> bool:
        """False once the drain has begun."""
        return self.stopper.accepting

    def start(self) -> None:
        """Start the background tasks on the running loop (idempotent)."""
        if self.stopper.loop is not None:
            return
        self.stopper.loop = asyncio.get_running_loop()
        self.stopper.spawn(supervised("queue admission", self.admission.run))
        sweep = functools.partial(
            self.live.release_unclaimed, self.config.unclaimed_ticket_sec, self.leave
        )
        self.stopper.spawn(supervised("unclaimed-ticket sweep", sweep))
        shared = self.resumes.shared
        if shared is not None:
            heard = self.anywhere.cancel_heard
            listen = functools.partial(shared.listen, heard, self.resumes.heard_claim)
            self.stopper.spawn(supervised("cancel and reader listener", listen))
        if self.relay is not None:
            self.stopper.spawn(supervised("answer relay", self.relay.run))

    @property
    def warnings(self) -> list[str]:
        """Problems of the set-up found at start-up (Redis eviction, several local queues)."""
        return [*self.admission.warnings, *self._warnings]

    def add_warning(self, warning: str) -> None:
        """Report a set-up problem in ``warnings`` (the caller logs it)."""
        self._warnings.append(warning)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each request's record once it reaches its final status."""
        self._listeners.append(listener)

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await ``closer`` in ``close()``, after the drain (to flush what listeners kept)."""
        self.stopper.add_closer(closer)

    def begin_drain(self) -> None:
        """Start draining (idempotent); safe to call from any thread or a signal handler."""
        self.stopper.begin_drain()

    async def drain(self) -> None:
        """Stop accepting, end waiting streams and give processing ones the grace period."""
        await self.stopper.drain()

    async def close(self) -> None:
        """Drain, then stop every task the manager owns."""
        await self.stopper.close()

    # -- what the queue reports ---------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``queue/status`` figures of this process."""
        return self.reporter.status()

    async def shared_status(self) -> dict[str, Any]:
        """The ``queue/status`` figures of the whole queue, however many processes share it."""
        return await self.reporter.shared_status()

    async def find(self, request_id: str) -> dict[str, Any] | None:
        """What the queue knows of a request, here or in another process sharing the queue."""
        return await self.reporter.find(request_id)

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        """What this process remembers of a request."""
        return self.reporter.lookup(request_id)

    def _snapshot(self) -> dict[str, Any]:
        return self.reporter.snapshot()

    # -- admission --------------------------------------------------------------

    async def submit(
        self,
        query: str,
        *,
        client_hint: str | None = None,
        client_groups: tuple[tuple[str, int], ...] = (),
        language: str | None = None,
        history: tuple[tuple[str, str], ...] = (),
        tier: str = "guest",
        max_wait_sec: float | None = None,
    ) -> Ticket:
        """Accept a request or raise a ``Refused`` subclass saying why not.

        ``client_hint`` is the opaque id of the client asking: its open requests
        (waiting, processing, following a leader or replaying a cached answer)
        are capped at ``max_per_client``. ``client_groups`` are the wider groups
        it belongs to (opaque id, multiple): each holds at most that multiple of
        the cap, whichever of its clients ask. ``language`` and ``history``
        (earlier turns) go to the workflow; a question with history is never
        answered from the cache nor shared. ``tier`` is the admission tier the site gave
        the request (``GUEST_PRIORITY``). ``max_wait_sec`` is the longest it will wait in
        line (the server's ``max_queue_wait_sec`` when None): one whose predicted wait is
        longer is refused (``WaitTooLong``) rather than queued to time out.
        """
        self.start()
        if not self.accepting:
            raise self.refuse(NotAccepting("The server is restarting; please try again.", 5))
        request_id = str(uuid.uuid4())
        record = RequestRecord(
            request_id=request_id,
            query=query,
            client_hint=client_hint,
            client_groups=client_groups,
            tier=tier,
            max_wait_sec=max_wait_sec if max_wait_sec else self.config.max_queue_wait_sec,
        )
        request = WorkflowRequest(request_id, query, language=language, history=history)
        ticket = Ticket(record, request)
        # Cheap first look (local queue only): a flooding client costs no cache lookup.
        refusal = self.admission.client_refusal(ticket.client, client_groups)
        if refusal is not None:
            raise self.refuse(self._refusal(refusal))
        try:
            if self.sharing is not None and not history:
                detached = await self._share(ticket)
                if detached:
                    return self._accept(ticket, detached=True)
            if not await self.is_available():
                raise Unavailable(
                    "The assistant is temporarily unavailable.",
                    math.ceil(self.config.availability_cache_sec) or 1,
                )
            refusal = await self.admission.enter(ticket) if self.accepting else "shutting_down"
        except Refused as exc:
            self.admission.leave(ticket)  # Gives back a hold taken for it (idempotent).
            raise self.refuse(exc) from None
        if refusal is not None:
            self.admission.leave(ticket)
            raise self.refuse(self._refusal(refusal))
        too_long = self.waits.at_the_door(ticket)
        if too_long is not None:
            self.admission.leave(ticket)
            raise self.refuse(too_long)
        self._lead(ticket)
        return self._accept(ticket, detached=False)

    async def _share(self, ticket: Ticket) -> bool:
        """Answer from the cache or follow an identical question; False: it must queue."""
        assert self.sharing is not None
        key, hit = await self.sharing.look_up(ticket)
        if key is None:
            return False  # Not to be shared (hidden characters): answered on its own.
        remote: RemoteLeader | None = None
        if hit is None and self.accepting and self.sharing.leader_of(key) is None:
            if self.relay is None:
                return False
            # Perhaps another process sharing the queue is answering it right now.
            remote = self.relay.leader_of(key)
            if remote is None:
                return False
        if hit is None and not self.accepting:
            return False
        if hit is None and self.sharing.full:
            raise self._refusal("queue_full")
        refusal = await self.admission.hold(ticket)
        if refusal is not None:
            raise self._refusal(refusal)
        if hit is not None:
            serve_from(ticket, hit)
            return True
        # The leader may have finished while the hold was taken: then queue (still held).
        if not self.accepting:
            return False
        if self.relay is not None:
            return self.relay.follow(ticket, remote)
        return self.sharing.follow(ticket, key)

    def refuse(self, refusal: Refused) -> Refused:
        """Count a refusal (by its code) and hand it back to be raised."""
        self.stats.reject(refusal.code)
        return refusal

    def _refusal(self, code: str) -> Refused:
        if code == ClientLimited.code:
            return self.client_limited()
        if code == NETWORK_LIMIT:
            return self.client_limited(network=True)
        if code == NotAccepting.code:
            return NotAccepting("The server is restarting; please try again.", 5)
        return QueueFull(
            "Too many guests are asking right now; please try again shortly.",
            self.stats.retry_after(self.admission.max_active, self.config.request_timeout_sec),
        )

    def client_limited(self, *, network: bool = False) -> ClientLimited:
        """The refusal for a client already at its cap, or (``network``) one of whose
        groups is at the group's (not yet counted)."""
        cap = self.config.max_per_client
        retry_after = self.stats.retry_after(
            self.admission.max_active, self.config.request_timeout_sec
        )
        if network:
            return ClientLimited(
                "Too many questions from your network are open right now; "
                "please wait for an answer before asking more.",
                retry_after,
            )
        return ClientLimited(
            f"You already have {cap} question{'s' if cap != 1 else ''} open; "
            "please wait for an answer before asking more.",
            retry_after,
        )

    def _accept(self, ticket: Ticket, *, detached: bool) -> Ticket:
        ticket.record.arrival_position = max(ticket.position, 1)
        self.live.add(ticket, detached=detached)
        self.stats.total += 1
        return ticket

    def _lead(self, ticket: Ticket) -> None:
        """A ticket in line for a slot answers its question for identical ones that follow."""
        if self.sharing is not None and ticket.share.cache_key is not None:
            self.sharing.lead(ticket)

    async def is_available(self) -> bool:
        """Whether the workflow's service is up, cached for a few seconds."""
        return await self.availability.check()

    # -- streams (the queue is their ``StreamHost``) ----------------------------------

    @property
    def queue_size(self) -> int:
        """Tickets waiting in the whole queue."""
        return self.admission.queue_size

    def estimate_wait(self, position: int) -> WaitEstimate | None:
        """How long a waiter at ``position`` is likely to wait, with a range; None: unknown."""
        return self.waits.estimate(position)

    @property
    def estimator(self) -> WaitEstimator:
        """What the estimates learn from (recent answers, admissions)."""
        return self.waits.estimator

    def events(self, ticket: Ticket) -> AsyncIterator[ev.Event | None]:
        """The request's events, ``None`` for a heartbeat; cleans up however it ends."""
        return RequestStream(self, ticket).events()

    def stream(self, ticket: Ticket) -> RequestStream:
        """The request's stream, for consumers that also ask what is ready to send."""
        return RequestStream(self, ticket)

    def start_workflow(self, ticket: Ticket, channel: Channel) -> None:
        """Run the workflow for an admitted ticket in its own task, feeding ``channel``."""
        # In a context of its own: the answer may outlive the request that asked it (others
        # follow it), and what that request's context holds ends with the request.
        task = asyncio.create_task(
            run_workflow(self.workflow, ticket.request, channel, self.availability.mark_down),
            context=contextvars.Context(),
        )
        self.stopper.track_workflow(ticket, task)
        if self.relay is not None:
            self.relay.started(ticket)  # Other processes may follow it from now on.

    # -- a busy upstream -------------------------------------------------------------

    def back_in_line(self, ticket: Ticket, retry_after_sec: float | None, message: str) -> bool:
        """Its workflow found the upstream busy (``WorkflowBusy``): put it back at the front
        of the line (True), or end it with ``message`` (False).

        It goes back only if no answer chunk reached anyone yet, it has been back fewer
        than ``MAX_BUSY_RETRIES`` times, and it can still start again before its timeout
        (counted from its first admission) runs out. Either way the queue admits less for
        ``retry_after_sec`` (``upstream_busy``).
        """
        retry = BUSY_RETRY_SEC if retry_after_sec is None else max(0.0, retry_after_sec)
        self.upstream_busy(retry)
        drive, record = ticket.drive, ticket.record
        now = time.monotonic()
        if (
            record.first_chunk_mono is not None
            or drive.requeues >= MAX_BUSY_RETRIES
            or (drive.deadline is not None and now + retry >= drive.deadline)
            or not self.accepting
        ):
            self.end(ticket, Status.FAILED, ev.CODE_UNAVAILABLE, message)
            return False
        drive.requeues += 1
        drive.busy = message
        drive.retry_at = now + retry
        record.mark_requeued()
        self.admission.requeue(ticket, front=True)
        return True

    def first_chunk(self, ticket: Ticket) -> None:
        """The ticket's workflow produced its first chunk: a sample of the upstream's speed."""
        self.admission.measured(ticket)

    def upstream_busy(self, retry_after_sec: float) -> None:
        """The workflow's upstream is overloaded (``WorkflowBusy``): the limit in use shrinks,
        and grows back only once ``retry_after_sec`` has passed and answers succeed again."""
        self.admission.upstream_busy(retry_after_sec)

    # -- endings ------------------------------------------------------------------

    def release(self, ticket: Ticket) -> None:
        """End the request if nothing else did: its client has gone (idempotent).

        An answer others follow runs on without its guest (see ``leave``).
        """
        self.leave(ticket, Ending.silent(Status.CANCELLED, DISCONNECTED, "The client went away."))

    def leave(self, ticket: Ticket, ending: Ending) -> bool:
        """The guest is done with its request: end it, unless others follow its answer.

        A shared answer belongs to everyone following it: then the guest only detaches
        (its stream, if still read, ends) and the answer runs on, holding its place or
        slot, until it ends or nobody follows it any more. True if it detached.
        """
        if ticket.record.status.is_terminal:
            return False
        if not self.answer_needed(ticket):
            self.finish(ticket, ending)
            return False
        if ticket.share.detach(ending.code):
            if not ticket.drive.started:
                # Its stream never started: drive the answer here (a stream of its own
                # that starts later sees it was left, and drives nothing).
                ticket.drive.started = True
                driver = RequestStream(self, ticket, unattended=True)
                self.stopper.spawn(drive(driver))
            else:
                # Its stream sees it has been left, ends, and hands the answer on.
                ticket.place.wake.set()
                nudge = ticket.drive.nudge
                if nudge is not None:
                    nudge()
        return True

    def answer_needed(self, ticket: Ticket) -> bool:
        """Whether others follow the ticket's answer, so it must run on without its guest."""
        if not self.accepting:
            return False
        return bool(ticket.share.followers) or (
            self.relay is not None and self.relay.relays(ticket)
        )

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
            budget = ticket.record.max_wait_sec or self.config.max_queue_wait_sec
            limit = budget if waited else self.config.request_timeout_sec
            ending = Ending.timed_out(
                code, limit, waiting=waited, fallback=self.config.timeout_fallback
            )
        else:
            ending = Ending.failed(code, message, status)
        self.finish(ticket, ending)

    def finish(self, ticket: Ticket, ending: Ending) -> None:
        """End the request: once, whatever path gets here first (its ending is the first)."""
        record = ticket.record
        if record.status.is_terminal or ticket.drive.stop is StopReason.HANDED_OFF:
            return
        ticket.ending = ending
        record.mark_finished(ending.status, ending.code, ending.message)
        if ending.status is Status.TIMEOUT and record.started_mono is not None:
            record.add_answer(self.config.timeout_fallback)
        for observer in self._observers:
            observer(ticket, ending)
        if ending.event is not None or ticket.share.detached is not None:
            # Its stream sends the ending (or stops driving a detached one).
            ticket.place.wake.set()

    def _end_observers(self) -> list[EndObserver]:
        """What must follow a request's ending, in order: it leaves the live set, its slot
        is given back once its workflow has stopped, its answer stops being relayed and
        shared (followers fall back or are served), then it is counted, remembered and
        handed to the listeners (history, metrics, the request log)."""
        observers: list[EndObserver] = [self.live.ended, self.stopper.ended]
        if self.relay is not None:
            observers.append(self.relay.ended)
        if self.sharing is not None:
            observers.append(self._sharing_ended)
        observers.append(self._record_ended)
        return observers

    def _sharing_ended(self, ticket: Ticket, ending: Ending) -> None:
        assert self.sharing is not None
        leader = ticket.share.leader
        self._fall_back(self.sharing.finished(ticket), ending)
        if (
            leader is not None
            and leader.share.detached is not None
            and not self.answer_needed(leader)
        ):
            # The last guest following an answer nobody else wants has gone: stop it.
            self.finish(leader, _gone(leader))

    def _record_ended(self, ticket: Ticket, ending: Ending) -> None:
        record = ticket.record
        self.stats.record_finished(record)
        self.waits.ended(ticket)
        self.recent.add(record)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("Request listener failed")

    def _fall_back(self, followers: list[Ticket], ending: Ending) -> None:
        """Followers of a leader that did not complete (``ending``) go back in line themselves."""
        assert self.sharing is not None
        for follower in followers:
            share = follower.share
            if share.forwarded_parts:
                # It has streamed part of this answer: it cannot start over unseen.
                self.finish(follower, _shared_failure(ending))
            elif not self.accepting:
                self.end(follower, Status.CANCELLED, ev.CODE_SHUTTING_DOWN, "Restarting.")
            elif not self.sharing.follow(follower, share.cache_key or ""):
                self.live.detached.discard(follower)
                self._lead(follower)
                self.admission.requeue(follower)
            follower.place.wake.set()

    def _known_here(self, request_id: str) -> bool:
        """Whether this process holds, or held, the request."""
        return self.live.get(request_id) is not None or self.recent.get(request_id) is not None

    def _lost(self, ticket: Ticket, message: str) -> None:
        """The shared queue no longer holds the ticket's place or slot: end it."""
        if ticket.place.admitted:
            # Its slot may already be someone else's: stop the workflow now.
            self.stopper.cancel_task(ticket)
        self.end(ticket, Status.FAILED, ev.CODE_UNAVAILABLE, message)

    def carry_on(self, ticket: Ticket, rest: Coroutine[Any, Any, None]) -> bool:
        """Run ``rest`` (the answer, for its followers) after the ticket's client left."""
        if not self.accepting:
            rest.close()
            return False
        ticket.share.detach(DISCONNECTED)
        self.stopper.spawn(rest)
        return True

    # -- resumable requests, hand-offs and requests held elsewhere -------------------

    def resumable(self, ticket: Ticket) -> Resumable:
        """Drive an accepted ticket in the background, so that it survives a disconnect."""
        return self.resumes.open(ticket)

    async def resume(self, request_id: str, after: int) -> AsyncIterator[bytes]:
        """A resumable request's messages after seq ``after`` (``RequestsAnywhere.resume``)."""
        return await self.anywhere.resume(request_id, after)

    async def cancel_anywhere(self, request_id: str) -> Status | None:
        """``cancel``, also for a request another process sharing the queue holds."""
        return await self.anywhere.cancel_anywhere(request_id)

    def cancel(self, request_id: str) -> Status | None:
        """End a request on purpose, freeing its place or slot; its status, None if unknown."""
        ticket = self.live.get(request_id)
        if ticket is not None:
            cancelled = Ending.failed(ev.CODE_CANCELLED, CANCELLED_MESSAGE, Status.CANCELLED)
            if self.leave(ticket, cancelled):
                # Its guest's request is over; the answer runs on for those who follow it.
                return Status.CANCELLED
            return ticket.record.status
        record = self.recent.get(request_id)
        return record.status if record is not None else None


def _gone(ticket: Ticket) -> Ending:
    """The ending of a detached answer once nobody follows it any more."""
    code = ticket.share.detached or DISCONNECTED
    return Ending.silent(Status.CANCELLED, code, "Nobody follows the answer any more.")


def _shared_failure(ending: Ending) -> Ending:
    """The ending of a follower whose leader stopped after streaming part of its answer."""
    if ending.event is not None:
        return ending
    message = "The answer was interrupted; please ask again."
    return Ending.failed(ev.CODE_INTERNAL, message, Status.CANCELLED)
