"""A shared answer belongs to everyone following it: a leader that leaves only detaches.

A hostile guest must not be able to abort a popular answer other guests follow by
asking it first and then closing its connection or cancelling it.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core.endings import Ending
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import Status

from .conftest import Factory, GateWorkflow, Stream, until
from .test_answer_cache import MemoryCache, make
from .test_redis_followers import announced, pair
from .test_resume import Reader


def answer(stream: Stream) -> str:
    return "".join(e.data for e in stream.events if e.name == "answer_chunk")


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What the loop's exception handler was given (an unretrieved task exception, say)."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(before)


def collect_garbage() -> None:
    """Collect finished tasks now: an exception nobody retrieved is reported then."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Earlier tests' leftovers are not this test's.
        gc.collect()


async def leave(manager: QueueManager, stream: Stream) -> None:
    """What the ASGI server does when the client goes: cancel the stream, close the response."""
    await stream.disconnect()
    manager.release(stream.ticket)


async def test_a_leader_closing_its_connection_leaves_its_followers_the_whole_answer(
    gate: GateWorkflow, loop_errors: list[dict[str, Any]]
) -> None:
    cache = MemoryCache()
    manager = make(gate, cache, max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    await leave(manager, leader)
    await asyncio.sleep(0.05)
    assert gate.closed == []  # the workflow runs on
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    assert answer(follower) == "Q-0 Q-1 "
    await until(lambda: manager.status()["active_requests"] == 0)
    await until(lambda: bool(cache.data))  # the answer was cached for the next guests
    collect_garbage()
    await asyncio.sleep(0)
    assert loop_errors == []
    assert manager.status()["failed_requests"] == 0


async def test_a_leader_leaving_before_its_slot_keeps_its_followers_place(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    leader = Stream(manager, await manager.submit("Q"))
    behind = Stream(manager, await manager.submit("other"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: follower.positions() == [1])
    await leave(manager, leader)
    await asyncio.sleep(0.05)
    # Its place in line still serves the follower: nobody behind it moved ahead.
    assert follower.ticket.position == 1 and behind.ticket.position == 2
    gate.open(head.ticket.request_id)
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    assert gate.started == ["head", "Q"]
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    gate.open(behind.ticket.request_id)
    await behind.done()


async def test_a_leader_cancelling_only_detaches_itself(gate: GateWorkflow) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    manager.cancel(leader.ticket.request_id)
    # The guest who cancelled hears that its stream ended; the answer runs on.
    assert (await leader.done())[-1] == "error"
    assert leader.events[-1].data["code"] == "cancelled"
    await asyncio.sleep(0.05)
    assert gate.closed == []
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    assert answer(follower) == "Q-0 Q-1 "
    await until(lambda: manager.status()["active_requests"] == 0)


async def test_a_leader_without_followers_still_stops_at_once(gate: GateWorkflow) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1)
    leader = Stream(manager, await manager.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    manager.cancel(leader.ticket.request_id)
    assert (await leader.done())[-1] == "error"
    await until(lambda: gate.closed == ["Q"])
    await until(lambda: manager.status()["active_requests"] == 0)
    assert manager.lookup(leader.ticket.request_id)["status"] == "cancelled"  # type: ignore[index]


# Across processes sharing the queue on Redis: the leader on one, a follower on another.


async def test_a_leader_leaving_does_not_cut_a_follower_on_another_process(
    shared: Factory,
    gate: GateWorkflow,
    loop_errors: list[dict[str, Any]],
) -> None:
    a, b = pair(shared, gate)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    follower = Stream(b, await b.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    await leave(a, leader)
    await asyncio.sleep(0.1)
    assert gate.closed == []
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    assert answer(follower) == "Q-0 Q-1 "
    await until(lambda: a.status()["active_requests"] == 0)
    collect_garbage()
    await asyncio.sleep(0)
    assert loop_errors == []


async def test_cancelling_a_resumable_leader_from_another_process_only_detaches_it(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a, b = pair(shared, gate, resume_grace_sec=5)
    leader = await a.submit("Q")
    reader = Reader(a, a.resumable(leader))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    follower = Stream(b, await b.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    # The hostile guest cancels its request through the other process.
    assert await b.cancel_anywhere(leader.request_id) is Status.CANCELLED
    assert (await reader.done())[-1] == "error"
    assert reader.events[-1]["data"]["code"] == "cancelled"
    await asyncio.sleep(0.1)
    assert gate.closed == [] and not follower.task.done()
    gate.open(leader.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    assert follower.events[-1].data["cached"] is True


async def test_a_stream_that_starts_after_its_guest_left_drives_nothing(
    gate: GateWorkflow,
) -> None:
    """The guest cancels (or is swept as never started) before its response is read; the
    response is read after all: the answer others follow still runs once."""
    manager = make(gate, MemoryCache(), max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    leader = await manager.submit("Q")  # its response is not read yet
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: follower.positions() == [1])
    manager.cancel(leader.request_id)
    late = Stream(manager, leader)  # the response starts being read now
    assert (await late.done())[-1] == "error"
    assert late.events[-1].data["code"] == "cancelled"
    gate.open(head.ticket.request_id)
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    gate.open(leader.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    assert answer(follower) == "Q-0 Q-1 "  # one workflow's answer, not two interleaved
    assert gate.started == ["head", "Q"] and gate.max_running == 1
    await until(lambda: manager.status()["active_requests"] == 0)
    status = manager.status()
    assert status["total_requests"] == 3 and status["completed_requests"] == 3


async def test_a_response_read_after_the_never_started_sweep_still_ends_with_one_event(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    leader = await manager.submit("Q")
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: follower.positions() == [1])
    # What the sweep does to a response nobody started reading (``unclaimed_ticket_sec``).
    manager.leave(leader, Ending.silent(Status.CANCELLED, "abandoned", "Stream never started."))
    late = Stream(manager, leader)
    assert await late.done() == ["error"]
    assert late.events[-1].data["code"] == "cancelled"
    for request_id in (head.ticket.request_id, leader.request_id):
        gate.open(request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    assert gate.started == ["head", "Q"]
