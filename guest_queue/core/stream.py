"""Driving one request's stream: wait for a slot, run the workflow, end exactly once."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from . import events as ev
from .answers.cache import CachedAnswer
from .backends.base import Ticket
from .records import Status
from .runner import CHANNEL_SIZE, Channel
from .translate import Completed, Ended, translate

if TYPE_CHECKING:
    from .manager import QueueManager

DISCONNECTED = "client_disconnected"


class RequestStream:
    """The events of one ticket, from the first ``queued`` to the terminal event."""

    def __init__(self, manager: QueueManager, ticket: Ticket) -> None:
        self.manager = manager
        self.ticket = ticket
        self._channel: Channel | None = None
        # A finished answer (a cache hit, a leader's answer) is known whole: its
        # events go out in one write instead of one each.
        self._burst = False

    @property
    def more_ready(self) -> bool:
        """Whether the next event is already waiting, so a writer may hold this one back."""
        if self._burst:
            return True
        return self._channel is not None and not self._channel.empty()

    async def events(self) -> AsyncIterator[ev.Event | None]:
        """The request's events, ``None`` for a heartbeat; cleans up however it ends."""
        ticket, manager, config = self.ticket, self.manager, self.manager.config
        ticket.claimed = True
        record = ticket.record
        try:
            reported = ticket.position
            self._burst = ticket.replay is not None
            yield self._queued_event()
            while not ticket.admitted and ticket.replay is None:
                if record.status.is_terminal:
                    break
                if ticket.position != reported:
                    reported = ticket.position
                    yield self._queued_event()
                    continue
                ticket.wake.clear()
                wait_left = self._queue_wait_left()
                try:
                    async with asyncio.timeout(min(config.heartbeat_sec, wait_left)):
                        await ticket.wake.wait()
                except TimeoutError:
                    if self._queue_wait_left() <= 0:
                        manager.end(ticket, Status.TIMEOUT, "queue_timeout", "")
                        break
                    yield None
            if record.status.is_terminal:
                self._burst = False
                for final in self._terminal_events():
                    yield final
                return
            self._burst = ticket.replay is not None
            yield ev.Event(ev.PROCESSING, {"waited_ms": record.wait_ms})
            if ticket.replay is not None:
                replayed = self._replay(ticket.replay)
                for i, event in enumerate(replayed):
                    self._burst = i < len(replayed) - 1
                    yield event
                return
            async for item in self._process():
                yield item
        finally:
            if not record.status.is_terminal:
                manager.finish(ticket, Status.CANCELLED, DISCONNECTED, "The client went away.")

    async def _process(self) -> AsyncIterator[ev.Event | None]:
        ticket, manager, config = self.ticket, self.manager, self.manager.config
        record = ticket.record
        channel: Channel = asyncio.Queue(maxsize=CHANNEL_SIZE)
        self._channel = channel
        manager.start_workflow(ticket, channel)
        assert record.started_mono is not None
        deadline = record.started_mono + config.request_timeout_sec
        while True:
            if ticket.interrupt is not None:
                manager.end(ticket, Status.CANCELLED, ticket.interrupt, "The server is restarting.")
            if record.status.is_terminal:
                for final in self._terminal_events():
                    yield final
                return
            left = deadline - time.monotonic()
            if left <= 0:
                manager.end(ticket, Status.TIMEOUT, "timeout", "")
                continue
            if channel.empty():
                try:
                    async with asyncio.timeout(min(config.heartbeat_sec, left)):
                        item = await channel.get()
                except TimeoutError:
                    if time.monotonic() < deadline:
                        yield None
                    continue
            else:
                # Chunks already waiting need no timer: most chunks of a fast workflow.
                item = channel.get_nowait()
            event = self._apply(item)
            if event is not None:
                yield event

    def _apply(self, item: object) -> ev.Event | None:
        """Translate one workflow item; an ending item finishes the ticket."""
        ticket, manager = self.ticket, self.manager
        step = translate(item)
        if isinstance(step, Completed):
            payload = {"suggested_questions": [], **step.payload, "cached": ticket.record.cached}
            ticket.terminal_event = ev.Event(ev.WORKFLOW_COMPLETE, payload)
            manager.finish(ticket, Status.COMPLETED)
            return None
        if isinstance(step, Ended):
            manager.end(ticket, step.status, step.code, step.message)
            return None
        if step is not None and step.name == ev.ANSWER_CHUNK:
            ticket.record.add_answer(step.data)
            if ticket.answer_parts is not None:
                ticket.answer_parts.append(step.data)
        return step

    def _replay(self, answer: CachedAnswer) -> list[ev.Event]:
        """A finished answer as the events a workflow would have produced."""
        ticket = self.ticket
        ticket.record.add_answer(answer.text)
        payload = {"suggested_questions": list(answer.suggested_questions), "cached": True}
        ticket.terminal_event = ev.Event(ev.WORKFLOW_COMPLETE, payload)
        self.manager.finish(ticket, Status.COMPLETED)
        chunks = [ev.Event(ev.ANSWER_CHUNK, answer.text)] if answer.text else []
        return [*chunks, ticket.terminal_event]

    def _terminal_events(self) -> list[ev.Event]:
        ticket = self.ticket
        assert ticket.terminal_event is not None
        if ticket.terminal_event.name == ev.TIMEOUT:
            return [
                ev.Event(ev.ANSWER_CHUNK, self.manager.config.timeout_fallback),
                ticket.terminal_event,
            ]
        return [ticket.terminal_event]

    def _queued_event(self) -> ev.Event:
        ticket, manager = self.ticket, self.manager
        position = max(ticket.position, 1)
        if ticket.admitted:
            estimate: float | None = 0.0
        else:
            estimate = manager.stats.estimate_wait_sec(
                position, manager.admission.free_slots, manager.config.max_concurrent
            )
        return ev.Event(
            ev.QUEUED,
            {
                "queue_position": position,
                "queue_size": manager.admission.queue_size,
                "estimated_wait_sec": estimate,
            },
        )

    def _queue_wait_left(self) -> float:
        record = self.ticket.record
        limit = self.manager.config.max_queue_wait_sec
        if not limit:
            return math.inf
        return record.created_mono + limit - time.monotonic()
