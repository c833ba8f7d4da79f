"""Followers whose leader did not complete: they line up again as one, or hear of the restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from guest_queue.workflows.base import WorkflowError, WorkflowRequest

from .conftest import GateWorkflow, Stream, until
from .test_answer_cache import MemoryCache, make


async def test_followers_of_a_leader_that_fails_during_the_drain_are_told_of_the_restart() -> None:
    go = asyncio.Event()

    class FailsBeforeAnyChunk:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[str]:
            await go.wait()
            if request.query:
                raise WorkflowError("upstream broke")
            yield "never"  # an async generator, like every workflow

    manager = make(FailsBeforeAnyChunk(), MemoryCache(), max_concurrent=2, shutdown_grace_sec=5)
    leader = Stream(manager, await manager.submit("Q"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: leader.ticket.record.status.value == "processing")
    manager.begin_drain()
    await until(lambda: not manager.accepting)
    # The leader fails within the grace period: its follower has seen nothing yet, but it
    # cannot line up again in a process that is stopping.
    go.set()
    assert (await follower.done())[-1] == "error"
    assert follower.events[-1].data == {"error": "Restarting.", "code": "shutting_down"}
    assert manager.lookup(follower.ticket.request_id)["status"] == "cancelled"  # type: ignore[index]
    assert (await leader.done())[-1] == "error"
    status = manager.status()
    assert status["cancelled_requests"] == 1 and status["failed_requests"] == 1


# "?" is a question whose key is empty: it is shared like any other.
@pytest.mark.parametrize("query", ["What is DNA?", "?"])
async def test_followers_of_a_leader_that_stopped_share_one_new_answer(query: str) -> None:
    gate = GateWorkflow(chunks=0)
    cache = MemoryCache()
    manager = make(gate, cache, max_concurrent=3)
    leader = Stream(manager, await manager.submit(query))
    followers = [Stream(manager, await manager.submit(query)) for _ in range(2)]
    await until(lambda: len(gate.started) == 1)
    gate.fail(leader.ticket.request_id)  # before any chunk: they line up again
    await until(lambda: len(gate.started) == 2)
    # The first follower answers it now (in a slot, no longer counted as waiting); the
    # second follows it.
    status = manager.status()
    assert status["active_requests"] == 1 and status["queue_size"] == 1
    # A guest asking the same question now follows the new leader too.
    late = Stream(manager, await manager.submit(query))
    await asyncio.sleep(0.05)
    assert len(gate.started) == 2
    for request_id in list(gate.gates) + [f.ticket.request_id for f in followers]:
        gate.open(request_id)
    for stream in [*followers, late]:
        assert (await stream.done())[-1] == "workflow_complete"
    assert [s.events[-1].data["cached"] for s in [*followers, late]] == [False, True, True]
    # And the answer is kept for the next guest asking it.
    await until(lambda: cache.data)
    again = Stream(manager, await manager.submit(query))
    assert (await again.done(timeout=1))[-1] == "workflow_complete"
    assert again.events[-1].data["cached"] is True and len(gate.started) == 2
