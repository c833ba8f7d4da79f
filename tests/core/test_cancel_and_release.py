"""Ending requests on purpose (cancel) and releasing ones whose stream never started."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from guest_queue.core.anywhere import UNREACHABLE_QUEUE
from guest_queue.core.errors import Unavailable
from guest_queue.core.records import Status

from ..services import closed_port
from .conftest import Factory, GateWorkflow, Stream, listening, make_manager, until
from .test_answer_cache import MemoryCache, make

CANCELLED = {"error": "The request was cancelled.", "code": "cancelled"}


async def test_cancel_ends_the_stream_with_a_cancelled_error(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    running = Stream(manager, await manager.submit("running"))
    waiting = Stream(manager, await manager.submit("waiting"))
    await until(lambda: gate.started == ["running"])
    assert await manager.cancel_anywhere(waiting.ticket.request_id) is Status.CANCELLED
    assert await manager.cancel_anywhere(running.ticket.request_id) is Status.CANCELLED
    for stream in (running, waiting):
        assert (await stream.done())[-1] == "error"
        assert stream.events[-1].data == CANCELLED
    assert await manager.cancel_anywhere("00000000-0000-4000-8000-000000000000") is None
    await manager.close()


async def test_a_cancel_through_another_process_ends_only_that_request(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1)
    b = shared(gate, max_concurrent=1)
    running = Stream(a, await a.submit("running"))
    waiting = Stream(a, await a.submit("waiting"))
    await until(lambda: gate.started == ["running"])
    await listening(a, b)
    assert await b.cancel_anywhere(waiting.ticket.request_id) is Status.CANCELLED
    await waiting.done()
    assert waiting.events[-1].data == CANCELLED
    assert a.status()["cancelled_requests"] == 1
    assert running.ticket.record.status is Status.PROCESSING  # only the one asked for
    gate.open(running.ticket.request_id)
    await running.done()


async def test_a_cancel_that_cannot_ask_the_shared_queue_is_unavailable(
    shared: Factory,
) -> None:
    manager = shared(
        GateWorkflow(), redis_url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=1.2
    )
    with pytest.raises(Unavailable) as refused:
        await manager.cancel_anywhere("00000000-0000-4000-8000-000000000000")
    assert refused.value.retry_after == 1 and str(refused.value) == UNREACHABLE_QUEUE


async def test_only_tickets_unclaimed_for_the_whole_limit_are_released(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=2, unclaimed_ticket_sec=0.4)
    manager.start()  # the sweep runs every 0.4 s from now
    claimed = Stream(manager, await manager.submit("claimed"))
    await asyncio.sleep(0.2)  # half-way between two sweeps
    submitted = time.monotonic()
    unclaimed = await manager.submit("never streamed")
    await until(lambda: unclaimed.record.status.is_terminal, timeout=3)
    # Not at the first sweep after it came (it was younger than the limit then).
    assert time.monotonic() - submitted >= 0.4
    assert unclaimed.record.status is Status.CANCELLED
    # Its history row says why: the guest never came for the answer.
    assert (unclaimed.record.error_code, unclaimed.record.error_message) == (
        "abandoned",
        "Stream never started.",
    )
    await asyncio.sleep(0.7)  # two more sweeps
    assert claimed.ticket.record.status is Status.PROCESSING
    gate.open(claimed.ticket.request_id)
    assert (await claimed.done())[-1] == "workflow_complete"
    await manager.close()


async def test_a_cache_hit_is_recorded_as_started_and_finished_at_once(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache, max_concurrent=1)
    first = Stream(manager, await manager.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    gate.open(first.ticket.request_id)
    await first.done()
    await until(lambda: cache.data)
    hit = Stream(manager, await manager.submit("Q"))
    assert (await hit.done())[-1] == "workflow_complete"
    record = manager.lookup(hit.ticket.request_id)
    assert record is not None and record["cached"] is True and record["status"] == "completed"
    assert record["started_at"] is not None and record["wait_ms"] is not None
    assert record["processing_ms"] is not None
    await manager.close()


async def test_the_unclaimed_ticket_sweep_looks_at_least_every_five_seconds(
    gate: GateWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recording(delay: float, *args: Any) -> Any:
        waits.append(delay)
        return await real_sleep(min(delay, 0.01), *args)

    manager = make_manager(gate, unclaimed_ticket_sec=60)
    monkeypatch.setattr(asyncio, "sleep", recording)
    manager.start()
    await until(lambda: len(waits) >= 3)
    monkeypatch.undo()
    # A guest who never came for the answer is let go 60 to 65 s after asking.
    assert 5.0 in waits and max(waits) == 5.0
    await manager.close()
