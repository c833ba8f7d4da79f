"""Followers of an identical question stream their leader's answer as it is produced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from guest_queue.workflows.base import WorkflowError

from .conftest import GateWorkflow, Stream, until
from .test_answer_cache import MemoryCache, make


def answer(stream: Stream) -> str:
    return "".join(e.data for e in stream.events if e.name == "answer_chunk")


async def test_a_follower_gets_its_first_chunk_before_the_leader_completes(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    follower = Stream(manager, await manager.submit("Q"))
    # The leader is held at its gate after two chunks: the follower already has them.
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    assert leader.ticket.record.status.value == "processing"
    assert follower.names == ["queued", "processing", "answer_chunk", "answer_chunk"]
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    await leader.done()
    # The rest of the answer only, never a chunk twice.
    assert answer(follower) == answer(leader) == "Q-0 Q-1 "
    assert follower.events[-1].data["cached"] is True
    assert manager.status()["completed_requests"] == 2
    assert manager.lookup(follower.ticket.request_id)["status"] == "completed"  # type: ignore[index]


async def test_the_answer_keeps_running_for_followers_when_the_leader_leaves(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    followers = [Stream(manager, await manager.submit("Q")) for _ in range(2)]
    await until(lambda: all(answer(f) == "Q-0 Q-1 " for f in followers))
    await leader.disconnect()
    await asyncio.sleep(0.05)
    assert gate.started == ["Q"] and gate.closed == []  # not cancelled, not started again
    gate.open(leader.ticket.request_id)
    for follower in followers:
        assert (await follower.done())[-1] == "workflow_complete"
        assert answer(follower) == "Q-0 Q-1 "
    await until(lambda: manager.status()["active_requests"] == 0)
    status = manager.status()
    # Every request has exactly one final status; the leader's answer was produced.
    assert status["completed_requests"] == 3 and status["total_requests"] == 3


async def test_followers_that_streamed_part_of_an_answer_share_its_failure() -> None:
    go = asyncio.Event()

    class Failing:
        async def stream(self, request: object) -> AsyncIterator[str]:
            yield "part "
            await go.wait()
            raise WorkflowError("upstream broke")

    manager = make(Failing(), MemoryCache(), max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: answer(follower) == "part ")
    go.set()
    await follower.done()
    await leader.done()
    assert follower.events[-1].name == leader.events[-1].name == "error"
    assert follower.events[-1].data["code"] == "workflow_error"
    assert answer(follower) == "part "
    assert manager.status()["failed_requests"] == 2


async def test_a_follower_cut_off_mid_answer_is_told_to_ask_again(gate: GateWorkflow) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=2, shutdown_grace_sec=5)
    leader = Stream(manager, await manager.submit("Q"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    manager.begin_drain()
    await until(lambda: not manager.accepting)
    # Draining, the answer no longer carries on without its asker: the follower has half
    # an answer and cannot start over unseen.
    await leader.disconnect()
    assert (await follower.done())[-1] == "error"
    assert follower.events[-1].data == {
        "error": "The answer was interrupted; please ask again.",
        "code": "internal",
    }
    assert manager.lookup(follower.ticket.request_id)["status"] == "cancelled"  # type: ignore[index]


async def test_a_follower_is_told_how_long_it_waited_when_its_leader_starts(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    leader = Stream(manager, await manager.submit("Q"))
    follower = Stream(manager, await manager.submit("Q"))
    await until(lambda: follower.names == ["queued"])
    await asyncio.sleep(0.15)  # both wait in line behind "head"
    gate.open(head.ticket.request_id)
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    processing = follower.events[1]
    assert processing.name == "processing"
    assert processing.data == {"waited_ms": follower.ticket.record.wait_ms}
    assert processing.data["waited_ms"] >= 150
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    await leader.done()
