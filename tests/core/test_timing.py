"""Clocks and timers: deadlines count from the right moment, heartbeats never come in bursts."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from guest_queue.core import events as ev
from guest_queue.core.consume import sse_stream
from guest_queue.core.manager import QueueManager
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

from .conftest import GateWorkflow, Stream, make_manager, until

TICK = 0.01


class CoarseClockLoop(asyncio.SelectorEventLoop):
    """A loop whose timers are rounded to 10 ms, as uvloop rounds them to whole milliseconds.

    A timer may fire up to half a step before ``time.monotonic()`` reaches its deadline.
    """

    def call_at(  # type: ignore[override]
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        return super().call_at(round(when / TICK) * TICK, callback, *args, context=context)


async def heartbeat_times(manager: QueueManager, query: str) -> tuple[list[float], list[str]]:
    """When each heartbeat of a request's stream came, and the names of its events."""
    ticket = await manager.submit(query)
    beats: list[float] = []
    names: list[str] = []
    async for event in manager.events(ticket):
        if event is None:
            beats.append(time.monotonic())
        else:
            names.append(event.name)
    return beats, names


def assert_spaced(beats: list[float], interval: float) -> None:
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert all(gap >= interval - 2 * TICK for gap in gaps), gaps


def test_no_burst_of_heartbeats_when_processing_times_out() -> None:
    async def scenario() -> tuple[list[float], list[str]]:
        manager = make_manager(GateWorkflow(), request_timeout_sec=0.35, heartbeat_sec=0.1)
        return await heartbeat_times(manager, "slow")

    for _ in range(5):
        with asyncio.Runner(loop_factory=CoarseClockLoop) as runner:
            beats, names = runner.run(scenario())
        assert names[-1] == ev.TIMEOUT
        assert len(beats) <= 3, beats  # 0.35 s at one per 0.1 s, never a burst at the deadline
        assert_spaced(beats, 0.1)


def test_no_burst_of_heartbeats_when_waiting_in_line_times_out() -> None:
    async def scenario() -> tuple[list[float], list[str]]:
        gate = GateWorkflow()
        manager = make_manager(gate, max_concurrent=1, max_queue_wait_sec=0.35, heartbeat_sec=0.1)
        head = Stream(manager, await manager.submit("head"))
        result = await heartbeat_times(manager, "waiter")
        gate.open(head.ticket.request_id)
        await head.done()
        return result

    for _ in range(5):
        with asyncio.Runner(loop_factory=CoarseClockLoop) as runner:
            beats, names = runner.run(scenario())
        assert names[-1] == ev.TIMEOUT
        assert len(beats) <= 3, beats
        assert_spaced(beats, 0.1)


async def test_the_processing_limit_counts_from_admission_not_arrival(
    gate: GateWorkflow,
) -> None:
    """A guest who waited most of the limit in line still gets the whole limit to be answered."""

    class Steady:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            await asyncio.sleep(0.3)
            yield "answer"

    manager = make_manager(Steady(), max_concurrent=1, request_timeout_sec=0.5)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    assert (await head.done())[-1] == ev.WORKFLOW_COMPLETE
    # The waiter arrived 0.3 s before its slot and needs 0.3 s more: 0.6 s after arrival.
    assert (await waiter.done())[-1] == ev.WORKFLOW_COMPLETE
    assert waiter.ticket.record.wait_ms is not None and waiter.ticket.record.wait_ms >= 250


async def test_heartbeats_go_out_on_the_wire_as_sse_comments(gate: GateWorkflow) -> None:
    manager = make_manager(gate, heartbeat_sec=0.05)
    ticket = await manager.submit("idle")
    chunks: list[bytes] = []

    async def read() -> None:
        async for chunk in sse_stream(manager, ticket):
            chunks.append(chunk)

    reader = asyncio.ensure_future(read())
    await until(lambda: sum(c.count(b": keep-alive\n\n") for c in chunks) >= 2)
    gate.open(ticket.request_id)
    await asyncio.wait_for(reader, 5)
    wire = b"".join(chunks)
    assert wire.count(b": keep-alive\n\n") >= 2
    # Each heartbeat is a whole SSE comment between messages, never inside one.
    for part in wire.split(b"\n\n"):
        assert part == b"" or part == b": keep-alive" or part.startswith(b"data: {")
