"""Driving one request's stream: wait for a slot, run the workflow, end exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, Protocol

from . import events as ev
from .answers.cache import CachedAnswer
from .backends.base import Ticket
from .config import QueueConfig
from .endings import Ending
from .estimate import WaitEstimate
from .records import Status
from .runner import CHANNEL_SIZE, Busy, Channel, Wake
from .translate import translate

DISCONNECTED = "client_disconnected"
CANCELLED_MESSAGE = "The request was cancelled."
#: Longest a workflow that raised ``WorkflowBusy`` is given to return before its slot goes.
BUSY_RETURN_SEC = 5.0


class StreamHost(Protocol):
    """What a request's stream needs from the queue that accepted it."""

    @property
    def config(self) -> QueueConfig: ...

    @property
    def queue_size(self) -> int:
        """Tickets waiting in the whole queue."""
        ...

    def estimate_wait(self, position: int) -> WaitEstimate | None:
        """How long a waiter at ``position`` is likely to wait, with a range; None: unknown."""
        ...

    def start_workflow(self, ticket: Ticket, channel: Channel) -> None:
        """Run the workflow for an admitted ticket, feeding ``channel``."""
        ...

    def end(self, ticket: Ticket, status: Status, code: str, message: str) -> None:
        """End the request with the error or timeout event its stream must still send."""
        ...

    def finish(self, ticket: Ticket, ending: Ending) -> None:
        """End the request (once: the first ending wins)."""
        ...

    def back_in_line(self, ticket: Ticket, retry_after_sec: float | None, message: str) -> bool:
        """Its workflow found the upstream busy: put it back at the front of the line (True),
        or end it with ``message`` (it cannot be retried)."""
        ...

    def answer_needed(self, ticket: Ticket) -> bool:
        """Whether others follow the ticket's answer, so it must run on without its guest."""
        ...

    def carry_on(self, ticket: Ticket, rest: Coroutine[Any, Any, None]) -> bool:
        """Run ``rest`` (the answer, for its followers) after the ticket's client left."""
        ...

    def first_chunk(self, ticket: Ticket) -> None:
        """The ticket's own workflow produced its first chunk (the limit's controller learns)."""
        ...


class RequestStream:
    """The events of one ticket, from the first ``queued`` to the terminal event."""

    def __init__(self, host: StreamHost, ticket: Ticket, *, unattended: bool = False) -> None:
        self.host = host
        self.ticket = ticket
        #: Driving the answer of a guest who has gone, for those who follow it.
        self.unattended = unattended
        self._channel: Channel | None = None
        # A finished answer (a cache hit, a leader's answer) is known whole: its
        # events go out in one write instead of one each.
        self._burst = False
        #: Set when its upstream was busy and it went back in line (``_pump`` returned).
        self._requeued = False
        self._busy: Busy | None = None
        #: Its guest left a shared answer while it waited: its stream has ended.
        self._gone = False

    @property
    def more_ready(self) -> bool:
        """Whether the next event is already waiting, so a writer may hold this one back."""
        if self._burst:
            return True
        return self._channel is not None and not self._channel.empty()

    async def events(self) -> AsyncIterator[ev.Event | None]:
        """The request's events, ``None`` for a heartbeat; cleans up however it ends."""
        ticket, host = self.ticket, self.host
        share, place = ticket.share, ticket.place
        ticket.drive.started = True
        record = ticket.record
        if self._left():
            # Its guest left before this stream started, and others follow its answer:
            # another stream drives that answer already (one workflow, never two).
            for final in self._detached_events():
                yield final
            return
        try:
            # Admitted at once (or answered from the cache): ``processing`` is ready too,
            # so both go out in one write.
            self._burst = share.replay is not None or place.admitted
            while True:
                async with contextlib.aclosing(self._wait_in_line()) as waiting:
                    async for waited in waiting:
                        yield waited
                if self._gone:
                    return
                if record.status.is_terminal:
                    self._burst = False
                    for final in self._terminal_events():
                        yield final
                    return
                self._burst = share.replay is not None
                if not share.forwarded_parts:
                    yield ev.Event(ev.PROCESSING, {"waited_ms": record.wait_ms})
                replay = share.replay  # Read again: the yield above may have let it be served.
                if replay is not None:
                    replayed = self._replay(replay)
                    for i, event in enumerate(replayed):
                        self._burst = i < len(replayed) - 1
                        yield event
                    return
                # The workflow's events come straight from ``_pump``: one generator less
                # for each of them to pass through.
                async for item in self._pump(self._start()):
                    yield item
                if not self._requeued:
                    return
                # Its upstream was busy: it waits at the front of the line again.
                self._requeued = False
                self._burst = False
        finally:
            if self._channel is not None:
                ticket.drive.nudge = None
            if not record.status.is_terminal and not self._carry_on():
                host.finish(
                    ticket, Ending.silent(Status.CANCELLED, DISCONNECTED, "The client went away.")
                )

    async def _wait_in_line(self) -> AsyncGenerator[ev.Event | None, None]:
        """``queued`` and the moves until a slot (or a cached answer) is its own, the request
        ends, or its guest leaves a shared answer (``_gone``: nothing more to send)."""
        ticket, config = self.ticket, self.host.config
        share, place, record = ticket.share, ticket.place, ticket.record
        reported = ticket.position
        yield self._queued_event()
        while share.replay is None and not (place.admitted and self._retry_left() <= 0):
            if record.status.is_terminal:
                return
            if self._left():
                for final in self._detached_events():
                    yield final
                self._gone = True
                return
            live = self._from_leader()
            if live:
                for event in live:
                    yield event
                continue
            if ticket.position != reported and not place.admitted:
                reported = ticket.position
                yield self._queued_event()
                continue
            # A follower waits on its leader's event, shared by all its followers.
            # Clearing it is safe: each stream checks what it waits for just before.
            wake = ticket.wake_event
            wake.clear()
            wait_left = self._queue_wait_left()
            # Admitted again before its busy upstream's Retry-After (another process, or a
            # limit that did not wait): it starts once that has passed, not before.
            pause = self._retry_left() if place.admitted else math.inf
            try:
                async with asyncio.timeout(min(config.heartbeat_sec, wait_left, pause)):
                    await wake.wait()
            except TimeoutError:
                # Which timer fired, not the clock, decides: a server's loop clock
                # (uvloop's, in whole milliseconds) may fire a moment before the deadline.
                if pause <= min(config.heartbeat_sec, wait_left):
                    continue
                if wait_left <= config.heartbeat_sec:
                    self._waited_too_long()
                    return
                yield None

    def _retry_left(self) -> float:
        """Seconds until its busy upstream said to try again (0 or less: it may start)."""
        retry_at = self.ticket.drive.retry_at
        return -1.0 if retry_at is None else retry_at - time.monotonic()

    def _left(self) -> bool:
        """Whether this stream's guest left while others follow its answer."""
        return self.ticket.share.detached is not None and not self.unattended

    def _detached_events(self) -> list[ev.Event]:
        """What a guest that left a shared answer hears if it still reads: its own request
        ended (every stream ends with exactly one terminal event)."""
        return [ev.error_event(ev.CODE_CANCELLED, CANCELLED_MESSAGE)]

    def _carry_on(self) -> bool:
        """Keep the answer going for those who follow it: True if it goes on."""
        ticket, host = self.ticket, self.host
        if self.unattended or not host.answer_needed(ticket):
            return False
        channel = self._channel
        rest = (
            self._drain_unattended(channel)
            if channel is not None
            else drive(RequestStream(host, ticket, unattended=True))
        )
        return host.carry_on(ticket, rest)

    async def _drain_unattended(self, channel: Channel) -> None:
        """Finish the answer with nobody to send this ticket's own events to."""
        self.unattended = True
        self.ticket.drive.nudge = None
        try:
            async for _ in self._pump(channel):
                pass
            if self._requeued and not self.ticket.record.status.is_terminal:
                # Its upstream was busy: back at the front of the line, for its followers.
                await drive(RequestStream(self.host, self.ticket, unattended=True))
        finally:
            if not self.ticket.record.status.is_terminal:
                self.host.finish(
                    self.ticket,
                    Ending.silent(Status.CANCELLED, DISCONNECTED, "The client went away."),
                )

    def _from_leader(self) -> list[ev.Event]:
        """A follower's share of its leader's answer so far: the chunks not yet sent."""
        ticket = self.ticket
        share = ticket.share
        leader = share.leader
        parts = leader.share.answer_parts if leader is not None else None
        if not parts or len(parts) <= share.forwarded_parts:
            return []
        fresh = parts[share.forwarded_parts :]
        events = []
        if not share.forwarded_parts:
            ticket.record.mark_started()
            events.append(ev.Event(ev.PROCESSING, {"waited_ms": ticket.record.wait_ms}))
        share.forwarded_parts = len(parts)
        for chunk in fresh:
            share.forwarded_chars += len(chunk)
            ticket.record.add_chunk(chunk)
            events.append(ev.Event(ev.ANSWER_CHUNK, chunk))
        return events

    def _start(self) -> Channel:
        """Start the workflow for the admitted ticket: the channel its output comes on."""
        channel = Channel(CHANNEL_SIZE)
        self._channel = channel
        if not self.unattended:
            self.ticket.drive.nudge = functools.partial(_nudge, channel)
        self.host.start_workflow(self.ticket, channel)
        return channel

    async def _pump(self, channel: Channel) -> AsyncIterator[ev.Event | None]:
        """The running workflow's events, to the terminal one."""
        ticket, host, config = self.ticket, self.host, self.host.config
        record, share, drive = ticket.record, ticket.share, ticket.drive
        assert record.started_mono is not None
        deadline = drive.deadline
        if deadline is None:
            # From its first admission: a request back in line after a busy upstream
            # keeps the deadline it had.
            deadline = drive.deadline = record.started_mono + config.request_timeout_sec
        while True:
            if share.detached is not None and not self.unattended:  # ``_left()``, inlined
                for final in self._detached_events():
                    yield final
                return
            if drive.stop is not None:
                host.end(ticket, Status.CANCELLED, drive.stop.value, "The server is restarting.")
                if not _ended(ticket):
                    return  # Handed off: another process answers it.
            if record.status.is_terminal:
                for final in self._terminal_events():
                    yield final
                return
            left = deadline - time.monotonic()
            if left <= 0:
                host.end(ticket, Status.TIMEOUT, "timeout", "")
                if not _ended(ticket):
                    return  # Handed off: never spin on an ending that does not take.
                continue
            if channel.empty():
                try:
                    async with asyncio.timeout(min(config.heartbeat_sec, left)):
                        item = await channel.get()
                except TimeoutError:
                    # The deadline's timer ends the request even when it fires a moment early;
                    # only the heartbeat's timer sends a heartbeat (never a burst of them).
                    if left <= config.heartbeat_sec:
                        host.end(ticket, Status.TIMEOUT, "timeout", "")
                    else:
                        yield None
                    continue
            else:
                # Chunks already waiting need no timer: most chunks of a fast workflow.
                item = channel.get_nowait()
            event = self._apply(item)
            if event is not None:
                yield event
            elif self._busy is not None and await self._back_in_line():
                return

    async def _back_in_line(self) -> bool:
        """Its upstream was busy: True if it went back to the front of the line (else it
        ended, or is ending, as an error)."""
        busy, self._busy = self._busy, None
        assert busy is not None
        ticket = self.ticket
        task = ticket.drive.task
        if task is not None and not task.done():
            # Its workflow has put its last item and is returning: the slot is given back
            # once it has (never more than the limit at once).
            await asyncio.wait({task}, timeout=BUSY_RETURN_SEC)
        if ticket.record.status.is_terminal or ticket.drive.stop is not None:
            return False
        retry_after = busy.retry_after_sec
        if retry_after is not None:
            retry_after = max(0.0, retry_after - (time.monotonic() - busy.at))
        if not self.host.back_in_line(ticket, retry_after, busy.message):
            return False
        ticket.drive.nudge = None
        self._channel = None
        self._requeued = True
        return True

    def _apply(self, item: object) -> ev.Event | None:
        """Translate one workflow item; an ending item finishes the ticket."""
        ticket = self.ticket
        step = translate(item)
        if isinstance(step, Ending):
            self.host.finish(ticket, step.with_cached(ticket.record.cached))
            return None
        if isinstance(step, Busy):
            self._busy = step  # ``_pump`` decides, once the workflow has returned.
            return None
        if step is not None and step.name == ev.ANSWER_CHUNK:
            data = step.data
            first = ticket.record.first_chunk_mono is None
            ticket.record.add_chunk(data)
            if first:
                self.host.first_chunk(ticket)
            parts = ticket.share.answer_parts
            if parts is not None:
                parts.append(data)
                # Its followers (here, or the relay to other processes) stream it live.
                ticket.place.moved.set()
        return step

    def _replay(self, answer: CachedAnswer) -> list[ev.Event]:
        """A finished answer as the events a workflow would have produced."""
        ticket = self.ticket
        # A follower that streamed its leader's answer live gets only the rest.
        rest = answer.text[ticket.share.forwarded_chars :]
        ticket.record.add_chunk(rest)
        payload = {"suggested_questions": list(answer.suggested_questions)}
        ending = Ending.completed(payload).with_cached(True)
        self.host.finish(ticket, ending)
        assert ending.event is not None
        chunks = [ev.Event(ev.ANSWER_CHUNK, rest)] if rest else []
        return [*chunks, ending.event]

    def _terminal_events(self) -> list[ev.Event]:
        ending = self.ticket.ending
        if ending is None or ending.event is None:
            return []  # Ended silently: its guest had gone (nobody reads this stream).
        if ending.event.name == ev.TIMEOUT:
            return [ev.Event(ev.ANSWER_CHUNK, self.host.config.timeout_fallback), ending.event]
        return [ending.event]

    def _queued_event(self) -> ev.Event:
        ticket, host = self.ticket, self.host
        position = max(ticket.position, 1)
        estimate: WaitEstimate | None
        if ticket.place.admitted or ticket.share.replay is not None:
            # Admitted, or a cache hit answered without a slot: no wait.
            estimate = NO_WAIT
        else:
            estimate = host.estimate_wait(position)
        retry_at = ticket.drive.retry_at
        if retry_at is not None:
            # Back in line after a busy upstream (or holding a slot for its restart): not
            # before it said to try again.
            estimate = at_least(estimate, round(retry_at - time.monotonic(), 1))
        return ev.Event(
            ev.QUEUED,
            {
                "queue_position": position,
                "queue_size": host.queue_size,
                "estimated_wait_sec": None if estimate is None else estimate.seconds,
                "estimated_wait_range_sec": None if estimate is None else estimate.range,
            },
        )

    def _waited_too_long(self) -> None:
        """End a request whose wait ran out: the queue's wait limit, or (back in line after
        a busy upstream) its timeout, as the upstream's error."""
        ticket = self.ticket
        busy = ticket.drive.busy
        if busy is not None:
            self.host.end(ticket, Status.FAILED, ev.CODE_UNAVAILABLE, busy)
        else:
            self.host.end(ticket, Status.TIMEOUT, "queue_timeout", "")

    def _queue_wait_left(self) -> float:
        drive = self.ticket.drive
        if drive.busy is not None and drive.deadline is not None:
            # Back in line after a busy upstream: bounded by its timeout, which runs from
            # its first admission, not by the queue's wait limit.
            return drive.deadline - time.monotonic()
        record = self.ticket.record
        # The request's own budget (``max_wait_sec``), else the server's.
        limit = record.max_wait_sec or self.host.config.max_queue_wait_sec
        if not limit:
            return math.inf
        return record.created_mono + limit - time.monotonic()


async def drive(stream: RequestStream) -> None:
    """Drive a stream nobody reads to its end (an answer others follow)."""
    async for _ in stream.events():
        pass


def _nudge(channel: Channel) -> None:
    """Make the stream reading ``channel`` look at its ticket again."""
    with contextlib.suppress(asyncio.QueueFull):  # A full channel is read soon anyway.
        channel.put_nowait(Wake())


def _ended(ticket: Ticket) -> bool:
    """Whether the ticket has its final status (an ending may not take: a handed-off one)."""
    return ticket.record.status.is_terminal


#: The estimate of a request that waits for nothing.
NO_WAIT = WaitEstimate(0.0, 0.0, 0.0)


def at_least(estimate: WaitEstimate | None, seconds: float) -> WaitEstimate:
    """The estimate, none of its figures below ``seconds`` (a wait known to last that long)."""
    floor = max(0.0, seconds)
    if estimate is None:
        return WaitEstimate(floor, floor, floor)
    return WaitEstimate(
        max(estimate.seconds, floor), max(estimate.low, floor), max(estimate.high, floor)
    )
