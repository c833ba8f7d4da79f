"""Deadlines and estimates through the queue: the range guests see, the refusal at the
door of a wait too long for the request's budget, and the budget ending a wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from guest_queue.core import events as ev
from guest_queue.core.backends.base import Ticket
from guest_queue.core.errors import ClientLimited, WaitTooLong
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import Status

from .conftest import Factory, GateWorkflow, Stream, make_manager, until


def learned(manager: QueueManager, seconds: float, count: int = 20) -> QueueManager:
    """The manager as if ``count`` answers of ``seconds`` had finished."""
    for _ in range(count):
        manager.estimator.add_sample(seconds)
    return manager


async def test_a_waiter_hears_an_estimate_with_its_range(gate: GateWorkflow) -> None:
    manager = learned(make_manager(gate, max_concurrent=1), 2.0)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: waiter.events)
    data = waiter.events[0].data
    # The answer in flight has just started: about its whole 2 s to go.
    assert 1.8 <= data["estimated_wait_sec"] <= 2.0
    low, high = data["estimated_wait_range_sec"]
    assert low <= data["estimated_wait_sec"] <= high
    assert waiter.ticket.record.first_estimate_sec == data["estimated_wait_sec"]
    for s in (head, waiter):
        gate.open(s.ticket.request_id)
    await waiter.done()


async def test_no_range_before_anything_is_known(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: waiter.events)
    assert waiter.events[0].data["estimated_wait_sec"] is None
    assert waiter.events[0].data["estimated_wait_range_sec"] is None
    assert head.events[0].data["estimated_wait_range_sec"] == [0.0, 0.0]  # admitted at once
    for s in (head, waiter):
        gate.open(s.ticket.request_id)
    await waiter.done()


async def test_the_error_of_the_first_estimate_is_kept_when_admitted(gate: GateWorkflow) -> None:
    manager = learned(make_manager(gate, max_concurrent=1), 2.0)
    assert manager.status()["estimated_wait_error_p50_sec"] is None
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: waiter.events)
    predicted = waiter.ticket.record.first_estimate_sec
    assert predicted is not None and predicted >= 1.8
    gate.open(head.ticket.request_id)  # ends long before the 2 s predicted
    await until(lambda: waiter.ticket.place.admitted)
    error = waiter.ticket.record.estimate_error_sec
    assert error is not None and -predicted <= error < -1.0  # admitted sooner than said
    assert manager.status()["estimated_wait_error_p50_sec"] == round(abs(error), 2)
    # The head was admitted at once: it had no estimate to be wrong about.
    assert head.ticket.record.estimate_error_sec is None
    gate.open(waiter.ticket.request_id)
    await waiter.done()


async def accepted(manager: QueueManager, query: str, **kwargs: Any) -> Ticket:
    """``submit``, tried again while the client's earlier holds are on their way back."""
    async with asyncio.timeout(2):
        while True:
            try:
                return await manager.submit(query, **kwargs)
            except ClientLimited:
                await asyncio.sleep(0.01)


async def wait_too_long_is_refused(manager: QueueManager, gate: GateWorkflow) -> None:
    """With a 2 s answer in the only slot, a 1 s budget is refused, a 5 s one accepted."""
    head = Stream(manager, await manager.submit("head", client_hint="c"))
    await until(lambda: head.ticket.place.admitted)
    with pytest.raises(WaitTooLong) as refused:
        await manager.submit("hurried", client_hint="c", max_wait_sec=1.0)
    assert refused.value.code == "wait_too_long" and refused.value.status_code == 429
    assert refused.value.retry_after >= 1
    assert manager.stats.rejected_by_code == {"wait_too_long": 1}
    assert manager.stats.total == 1  # not counted as accepted
    assert not manager.admission.waiting  # not left in line
    # Its hold was given back: the client's cap (2) still lets a second request in (at
    # once here; with the next batch of leaves a shared queue sends).
    patient = Stream(manager, await accepted(manager, "patient", client_hint="c", max_wait_sec=5))
    await until(lambda: patient.events)
    assert patient.events[0].data["queue_position"] == 1  # nobody left a place ahead of it
    for s in (head, patient):
        gate.open(s.ticket.request_id)
    await patient.done()
    assert manager.status()["rejected_wait_too_long"] == 1


async def test_a_wait_longer_than_the_budget_is_refused_at_the_door(gate: GateWorkflow) -> None:
    manager = learned(make_manager(gate, max_concurrent=1, max_per_client=2), 2.0)
    await wait_too_long_is_refused(manager, gate)


async def test_a_shared_queue_refuses_a_wait_too_long_too(
    shared: Factory, gate: GateWorkflow
) -> None:
    manager = learned(shared(gate, max_concurrent=1, max_per_client=2), 2.0)
    await wait_too_long_is_refused(manager, gate)
    assert manager.admission.queue_size == 0


async def test_the_servers_longest_wait_is_the_default_budget(gate: GateWorkflow) -> None:
    manager = learned(make_manager(gate, max_concurrent=1, max_queue_wait_sec=1.0), 2.0)
    head = Stream(manager, await manager.submit("head"))
    with pytest.raises(WaitTooLong):
        await manager.submit("waiter")
    gate.open(head.ticket.request_id)
    await head.done()


async def test_retry_after_comes_from_the_drain_rate(gate: GateWorkflow) -> None:
    now = [0.0]
    manager = learned(make_manager(gate, max_concurrent=1), 20.0)
    manager.estimator.clock = lambda: now[0]
    head = Stream(manager, await manager.submit("head"))  # admitted at t=0
    await until(lambda: head.ticket.place.admitted)
    for t in (5.0, 10.0):
        now[0] = t
        manager.estimator.note_admission()
    # Three admissions in 10 s: 0.3 a second; one place to drain to fit a 1 s wait:
    # 1 / 0.3 - 1 = 2.3 s, rounded up.
    with pytest.raises(WaitTooLong) as refused:
        await manager.submit("waiter", max_wait_sec=1)
    assert refused.value.retry_after == 3
    gate.open(head.ticket.request_id)
    await head.done()


async def test_a_request_overtaken_until_its_own_deadline_times_out(gate: GateWorkflow) -> None:
    # Nothing known yet: no estimate, so it is accepted; its own 0.2 s budget ends it.
    manager = make_manager(gate, max_concurrent=1, heartbeat_sec=5)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter", max_wait_sec=0.2))
    patient = Stream(manager, await manager.submit("patient"))
    assert await waiter.done() == [ev.QUEUED, ev.ANSWER_CHUNK, ev.TIMEOUT]
    assert waiter.ticket.record.status is Status.TIMEOUT
    assert waiter.ticket.record.error_code == "queue_timeout"
    assert waiter.events[-1].data["timeout_sec"] == 0.2  # its own budget, not the server's
    assert not patient.ticket.record.status.is_terminal  # no server bound: it waits on
    for s in (head, patient):
        gate.open(s.ticket.request_id)
    await patient.done()


async def test_a_process_counts_the_answers_another_process_runs(
    shared: Factory, gate: GateWorkflow
) -> None:
    """On a shared queue each process estimates from what it knows: the other's answer
    holds the only slot, at an elapsed time this process cannot see."""
    first = learned(shared(gate, max_concurrent=1), 2.0)
    second = learned(shared(gate, max_concurrent=1), 2.0)
    head = Stream(first, await first.submit("head"))
    await until(lambda: head.ticket.place.admitted)
    waiter = Stream(second, await second.submit("waiter"))
    await until(lambda: waiter.events)
    data = waiter.events[0].data
    # Somewhere within one 2 s answer, not "no wait" (nothing of its own runs here).
    assert 0.5 <= data["estimated_wait_sec"] <= 1.5
    low, high = data["estimated_wait_range_sec"]
    assert low < data["estimated_wait_sec"] < high <= 2.0
    for s in (head, waiter):
        gate.open(s.ticket.request_id)
    await waiter.done()


@pytest.mark.parametrize(("ahead", "expected"), [("member", 2.0), ("guest", 6.0)])
async def test_the_estimate_knows_the_tiers_ahead(
    gate: GateWorkflow, ahead: str, expected: float
) -> None:
    manager = make_manager(gate, max_concurrent=1)
    for _ in range(20):
        manager.estimator.add_sample(1.0, "member")  # members ask short questions
        manager.estimator.add_sample(5.0, "guest")
    head = Stream(manager, await manager.submit("head", tier="member"))
    await until(lambda: head.ticket.place.admitted)
    first = Stream(manager, await manager.submit("first", tier=ahead))
    second = Stream(manager, await manager.submit("second", tier="guest"))
    await until(lambda: second.events)
    # The member's answer in the slot (1 s), then the one ahead of it (1 s or 5 s).
    assert second.events[0].data["estimated_wait_sec"] == pytest.approx(expected, abs=0.1)
    for s in (head, first, second):
        gate.open(s.ticket.request_id)
    await second.done()
