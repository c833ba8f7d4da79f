"""The limit in use moving under a running queue: local and shared through Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from guest_queue.core.concurrency import Change
from guest_queue.core.manager import QueueManager
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

from .conftest import Factory, GateWorkflow, Stream, admission, make_manager, until


async def submit_all(manager: QueueManager, count: int) -> list[Stream]:
    return [Stream(manager, await manager.submit(f"r{i}")) for i in range(count)]


async def test_a_higher_limit_admits_waiting_guests_at_once(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    streams = await submit_all(manager, 4)
    await until(lambda: len(gate.started) == 1)
    manager.admission.apply_limit(Change(1, 3, "test"))
    await until(lambda: len(gate.started) == 3)
    assert gate.started == ["r0", "r1", "r2"]  # still first come, first served
    assert manager.status()["max_concurrent_requests"] == 3
    await until(lambda: streams[3].ticket.position == 1)
    for s in streams:
        gate.open(s.ticket.request_id)
    for s in streams:
        assert (await s.done())[-1] == "workflow_complete"


async def test_a_lower_limit_stops_no_answer_and_admits_fewer(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=3)
    streams = await submit_all(manager, 5)
    await until(lambda: len(gate.started) == 3)
    manager.admission.apply_limit(Change(3, 1, "test"))
    gate.open(streams[0].ticket.request_id)
    assert (await streams[0].done())[-1] == "workflow_complete"
    await asyncio.sleep(0.1)
    assert len(gate.started) == 3  # two still answer: the next waits for room under one
    assert gate.running == 2
    for s in streams[1:3]:
        gate.open(s.ticket.request_id)
        assert (await s.done())[-1] == "workflow_complete"
    await until(lambda: gate.started == ["r0", "r1", "r2", "r3"])
    await asyncio.sleep(0.1)
    assert gate.running == 1 and gate.max_running == 3
    for s in streams[3:]:
        gate.open(s.ticket.request_id)
        assert (await s.done())[-1] == "workflow_complete"


async def test_a_busy_upstream_halves_a_fixed_limit_and_the_log_says_why(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(gate, max_concurrent=4)
    streams = await submit_all(manager, 6)
    await until(lambda: len(gate.started) == 4)
    with caplog.at_level(logging.INFO, logger="guest_queue"):
        manager.upstream_busy(30.0)
    assert manager.status()["max_concurrent_requests"] == 2
    assert manager.status()["concurrency"] == {"mode": "fixed", "floor": 4, "ceiling": 4}
    assert "Concurrency limit 4 -> 2 (fixed): the upstream is overloaded" in caplog.text
    assert gate.running == 4  # nothing in flight is stopped
    for s in streams[:3]:
        gate.open(s.ticket.request_id)
        await s.done()
    await until(lambda: len(gate.started) == 5)
    await asyncio.sleep(0.1)
    assert len(gate.started) == 5  # two at once now: the sixth waits
    for s in streams[3:]:
        gate.open(s.ticket.request_id)
    for s in streams[3:]:
        await s.done()


class Flat:
    """Answers in 20 ms whatever the load: an upstream that never slows."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(0.02)
            yield "answer"
            yield {"event": "workflow_complete", "data": {"suggested_questions": []}}
        finally:
            self.running -= 1


async def keep_asking(manager: QueueManager, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await Stream(manager, await manager.submit("q")).done()


async def test_auto_raises_the_limit_while_answers_keep_their_speed() -> None:
    flow = Flat()
    manager = make_manager(
        flow, max_concurrent=6, adaptive=True, concurrency_floor=1, max_per_client=0
    )
    assert manager.status()["max_concurrent_requests"] == 1
    assert manager.status()["concurrency"] == {"mode": "auto", "floor": 1, "ceiling": 6}
    stop = asyncio.Event()
    guests = [asyncio.create_task(keep_asking(manager, stop)) for _ in range(12)]
    try:
        await until(lambda: manager.admission.max_active == 6, timeout=15)
    finally:
        stop.set()
        await asyncio.gather(*guests)
    assert flow.max_running == 6  # up to the ceiling, never beyond


# -- one limit shared through Redis ----------------------------------------------------


def leader(*managers: QueueManager) -> list[QueueManager]:
    return [m for m in managers if admission(m).shared_limit.leading]


async def test_one_limit_for_every_process_and_a_busy_signal_from_any(
    shared: Factory, gate: GateWorkflow
) -> None:
    a, b = shared(gate, max_concurrent=4), shared(gate, max_concurrent=4)
    await until(lambda: len(leader(a, b)) == 1)
    follower = b if leader(a, b) == [a] else a
    follower.upstream_busy(30.0)  # heard by the other process's controller
    await until(lambda: a.admission.max_active == 2 and b.admission.max_active == 2)
    streams = [Stream((a, b)[i % 2], await (a, b)[i % 2].submit(f"r{i}")) for i in range(4)]
    await until(lambda: len(gate.started) == 2)
    await asyncio.sleep(0.4)  # long enough for a wrongly admitted third to start
    assert gate.started == ["r0", "r1"]
    assert (await a.shared_status())["max_concurrent_requests"] == 2
    for s in streams:
        gate.open(s.ticket.request_id)
    for s in streams:
        assert (await s.done())[-1] == "workflow_complete"


async def test_the_controllers_lease_moves_when_its_process_closes(
    shared: Factory, gate: GateWorkflow
) -> None:
    a, b = shared(gate, max_concurrent=4), shared(gate, max_concurrent=4)
    await until(lambda: len(leader(a, b)) == 1)
    first = leader(a, b)[0]
    other = b if first is a else a
    first.upstream_busy(30.0)
    await until(lambda: other.admission.max_active == 2)
    await first.close()
    await until(lambda: leader(other) == [other], timeout=5)
    # The new controller starts where the last one left the limit.
    await asyncio.sleep(0.3)
    assert other.admission.max_active == 2
    other.upstream_busy(30.0)
    await until(lambda: other.admission.max_active == 1)


async def test_a_raised_shared_limit_admits_waiters_at_once(
    shared: Factory, gate: GateWorkflow
) -> None:
    a = shared(gate, max_concurrent=4)
    b = shared(gate, max_concurrent=4)
    await until(lambda: len(leader(a, b)) == 1)
    head = leader(a, b)[0]
    head.upstream_busy(0.0)
    await until(lambda: a.admission.max_active == 2 and b.admission.max_active == 2)
    streams = [Stream(a, await a.submit(f"r{i}")) for i in range(4)]
    await until(lambda: len(gate.started) == 2)
    # The limit back up (as the controller writes it): the two waiting start at once.
    shared_limit = admission(head).shared_limit
    shared_limit.limiter.limit = 4
    shared_limit.limiter.version += 1
    await until(lambda: len(gate.started) == 4, timeout=3)
    for s in streams:
        gate.open(s.ticket.request_id)
    for s in streams:
        await s.done()


async def test_the_shared_limit_rises_on_answers_measured_in_another_process(
    shared: Factory, gate: GateWorkflow
) -> None:
    a = shared(gate, max_concurrent=4, adaptive=True, concurrency_floor=1)
    b = shared(gate, max_concurrent=4, adaptive=True, concurrency_floor=1)
    await until(lambda: len(leader(a, b)) == 1)
    head = leader(a, b)[0]
    other = b if head is a else a
    streams = [Stream(head, await head.submit(f"r{i}")) for i in range(3)]
    await until(lambda: len(gate.started) == 1)  # auto starts at its floor: guests wait
    # Answers measured only in the other process, fast: the controller raises the limit
    # for the whole queue and a waiting guest starts.
    version = admission(other).limit_version
    for _ in range(10):
        admission(other).sample(version, 0.05)
    await until(lambda: len(gate.started) == 2, timeout=5)
    await until(lambda: other.admission.max_active == 2)
    for s in streams:
        gate.open(s.ticket.request_id)
    for s in streams:
        await s.done()
