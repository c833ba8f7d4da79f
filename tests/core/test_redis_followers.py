"""Single flight across processes: followers on another process stream the leader's answer.

Two managers sharing one Redis prefix stand in for two processes (each has its
own connections, process id and answer cache).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core.answers.sharing import RemoteLeader
from guest_queue.core.errors import ClientLimited
from guest_queue.workflows.base import WorkflowError

from .conftest import Factory, GateWorkflow, Stream, admission, until
from .test_answer_cache import MemoryCache
from .test_resume import Reader, chunks


def answer(stream: Stream) -> str:
    return "".join(e.data for e in stream.events if e.name == "answer_chunk")


async def announced(manager: Any, key: str = "q") -> None:
    """Wait until ``manager`` has heard that another process answers ``key``."""
    await until(lambda: manager.relay.shared.leader(key) is not None)


def pair(shared: Factory, workflow: Any, **config: Any) -> tuple[Any, Any]:
    config.setdefault("max_concurrent", 2)
    return shared(workflow, MemoryCache(), **config), shared(workflow, MemoryCache(), **config)


async def test_a_follower_on_another_process_streams_the_answer_live_without_a_slot(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a, b = pair(shared, gate, max_per_client=1)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    follower = Stream(b, await b.submit("Q", client_hint="guest"))
    # The leader is held at its gate after two chunks: the follower on b already has them.
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    assert leader.ticket.record.status.value == "processing"
    # The chunks produced before it came arrive at once (as one), later ones as produced.
    assert follower.names[:2] == ["queued", "processing"]
    assert set(follower.names[2:]) == {"answer_chunk"}
    assert follower.events[0].data["queue_position"] == 1
    # No workflow ran for it, and it holds no slot and no place in the shared line.
    assert gate.started == ["Q"]
    assert admission(b).active == {} and admission(b).waiting == {}
    # But it counts against its client's cap, on every process.
    assert follower.ticket.request_id in admission(b).held
    with pytest.raises(ClientLimited):
        await a.submit("something else", client_hint="guest")
    await until(lambda: admission(b).active_count == 1 and admission(b).queue_size == 0)
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    await leader.done()
    # The rest of the answer only, never a chunk twice; the wire format as a local follower's.
    assert answer(follower) == answer(leader) == "Q-0 Q-1 "
    assert follower.events[-1].data == {"suggested_questions": ["more?"], "cached": True}
    assert [e.name for e in follower.events].count("processing") == 1
    assert b.status()["completed_requests"] == 1 and gate.started == ["Q"]
    # Nothing left behind on b: no stand-in, no reader.
    assert b.sharing is not None and b.sharing.inflight == {} and b.sharing.following == 0
    assert admission(b).held == {}


async def test_followers_on_another_process_keep_the_answer_when_the_leaders_guest_leaves(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a, b = pair(shared, gate)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    followers = [Stream(b, await b.submit("Q")) for _ in range(2)]
    await until(lambda: all(answer(f) == "Q-0 Q-1 " for f in followers))
    await leader.disconnect()
    await asyncio.sleep(0.2)
    assert gate.started == ["Q"] and gate.closed == []  # not cancelled, not started again
    gate.open(leader.ticket.request_id)
    for follower in followers:
        assert (await follower.done())[-1] == "workflow_complete"
        assert answer(follower) == "Q-0 Q-1 "
    await until(lambda: a.status()["active_requests"] == 0)
    # The leader's answer was produced (and cached by its process), once.
    assert a.status()["completed_requests"] == 1 and b.status()["completed_requests"] == 2
    assert gate.started == ["Q"]


class FailsFirst:
    """The first request waits for ``go`` and fails without a chunk; later ones answer."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started: list[str] = []

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        self.started.append(request.request_id)
        if len(self.started) == 1:
            await self.go.wait()
            raise WorkflowError("upstream broke")
        yield "the answer"


async def test_when_the_leader_fails_a_follower_elsewhere_goes_back_in_line_and_is_answered(
    shared: Factory,
) -> None:
    flow = FailsFirst()
    a, b = pair(shared, flow)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: len(flow.started) == 1)
    await announced(b)
    follower = Stream(b, await b.submit("Q"))
    await until(lambda: b.sharing is not None and b.sharing.following == 1)
    await asyncio.sleep(0.2)
    assert len(flow.started) == 1  # following, not answering on its own
    flow.go.set()
    assert (await leader.done())[-1] == "error"
    assert (await follower.done())[-1] == "workflow_complete"
    assert answer(follower) == "the answer"
    # It led the second try itself, in a slot of its own.
    assert flow.started == [leader.ticket.request_id, follower.ticket.request_id]
    assert follower.events[-1].data["cached"] is False


async def test_followers_elsewhere_that_streamed_part_of_a_failed_answer_share_its_failure(
    shared: Factory,
) -> None:
    go = asyncio.Event()
    calls: list[str] = []

    class Failing:
        async def stream(self, request: Any) -> AsyncIterator[str]:
            calls.append(request.query)
            yield "part "
            await go.wait()
            raise WorkflowError("upstream broke")

    a, b = pair(shared, Failing())
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: answer(leader) == "part ")
    await announced(b)
    follower = Stream(b, await b.submit("Q"))
    await until(lambda: answer(follower) == "part ")
    go.set()
    await follower.done()
    await leader.done()
    assert follower.events[-1].name == leader.events[-1].name == "error"
    assert follower.events[-1].data["code"] == "workflow_error"
    assert answer(follower) == "part "
    assert b.status()["failed_requests"] == 1
    assert calls == ["Q"]  # It followed: the workflow ran once.


async def test_a_leader_here_that_ends_while_a_guest_is_let_in_leaves_it_to_line_up(
    shared: Factory,
    gate: GateWorkflow,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=2)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    hold = admission(a).hold

    async def leader_leaves_meanwhile(ticket: Any) -> str | None:
        await leader.disconnect()  # nobody follows it yet: it is cancelled
        return await hold(ticket)

    # The question is answered here (not elsewhere), but its leader is gone once the new
    # guest's hold is taken: the guest answers it itself.
    monkeypatch.setattr(admission(a), "hold", leader_leaves_meanwhile)
    late = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q", "Q"])
    gate.open(late.ticket.request_id)
    assert (await late.done())[-1] == "workflow_complete"
    assert answer(late) == "Q-0 Q-1 " and late.events[-1].data["cached"] is False
    assert leader.ticket.record.status.value == "cancelled"


async def test_a_follower_of_a_leader_whose_process_died_falls_back(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a, b = pair(shared, gate, lease_sec=1.0)
    Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    follower = Stream(b, await b.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    # The leader's process stops dead: no renewals, no relay, no goodbye to Redis.
    for task in list(a.stopper.background):
        task.cancel()
    a.admission.leave = lambda ticket: None
    died = time.monotonic()
    # It had streamed part of the answer: it ends with an error rather than starting over.
    assert (await follower.done(timeout=8))[-1] == "error"
    assert follower.events[-1].data["code"] == "unavailable"
    assert time.monotonic() - died < 5.0
    assert gate.started == ["Q"]


async def test_a_follower_whose_guest_leaves_stops_reading(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a, b = pair(shared, gate)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    follower = Stream(b, await b.submit("Q"))
    await until(lambda: answer(follower) == "Q-0 Q-1 ")
    assert b.sharing is not None
    remote = b.sharing.inflight["q"]
    assert isinstance(remote, RemoteLeader) and remote.reader is not None
    await follower.disconnect()
    await until(lambda: remote.reader is not None and remote.reader.done())
    assert b.sharing.inflight == {} and b.sharing.following == 0
    await until(lambda: admission(b).held == {})
    assert b.status()["cancelled_requests"] == 1
    # The leader is not disturbed.
    gate.open(leader.ticket.request_id)
    assert (await leader.done())[-1] == "workflow_complete"


async def test_a_resumable_follower_elsewhere_resumes_without_losing_a_chunk(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a, b = pair(shared, gate, resume_grace_sec=5)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b)
    ticket = await b.submit("Q")
    res = b.resumable(ticket)
    first = Reader(b, res)
    await until(lambda: chunks(first) == "Q-0 Q-1 ")
    await first.disconnect()  # its connection drops; the request keeps following
    gate.open(leader.ticket.request_id)
    await leader.done()
    await until(lambda: ticket.record.status.value == "completed")
    again = Reader(b, res, after=first.seqs[-1])
    assert (await again.done())[-1] == "workflow_complete"
    assert chunks(first) + chunks(again) == "Q-0 Q-1 "
    assert first.seqs + again.seqs == list(range(1, len(first.seqs) + len(again.seqs) + 1))
    assert gate.started == ["Q"]
