"""Hand-offs at a drain: unadopted ones recorded once, followers handed off too."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from guest_queue.core.answers.sharing import RemoteLeader

from .conftest import Factory, GateWorkflow, Stream, admission, until
from .test_answer_cache import MemoryCache
from .test_redis_followers import announced, pair
from .test_resume import Reader


async def test_a_hand_off_nobody_adopts_is_recorded_once_as_cancelled(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=0.5)
    b = shared(gate, max_concurrent=1, resume_grace_sec=0.5)
    c = shared(gate, max_concurrent=1, resume_grace_sec=0.5)
    ended: dict[str, list[Any]] = {"a": [], "b": [], "c": []}
    for name, manager in (("a", a), ("b", b), ("c", c)):
        manager.add_listener(ended[name].append)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    waiting = [await a.submit(f"w{i}") for i in range(2)]
    readers = [Reader(a, a.resumable(t)) for t in waiting]
    await until(lambda: all(r.names == ["queued"] for r in readers))
    a.begin_drain()
    for reader in readers:
        assert (await reader.done())[-1] == "reconnect"
    # Nobody resumes them: after the grace, one live process (any) records each once.
    await until(lambda: len(ended["b"]) + len(ended["c"]) == 2, timeout=5)
    await asyncio.sleep(1.5)  # more renewal passes of every process: none records it again
    recorded = ended["b"] + ended["c"]
    assert sorted(r.request_id for r in recorded) == sorted(t.request_id for t in waiting)
    assert {(r.status.value, r.query) for r in recorded} == {
        ("cancelled", "w0"),
        ("cancelled", "w1"),
    }
    assert ended["a"] == []
    # The figures of all processes add up: every accepted request counted once, ended once.
    figures = [m.status() for m in (a, b, c)]
    assert sum(f["total_requests"] for f in figures) == 3
    assert sum(f["cancelled_requests"] for f in figures) == 2
    status = await b.shared_status()
    assert status["cancelled_requests"] == 2 and status["queue_size"] == 0
    holder = b if ended["b"] else c
    assert (await holder.find(waiting[0].request_id) or {}).get("status") in ("cancelled", None)
    assert await b.adopt(waiting[0].request_id) is None  # too late to adopt it now
    gate.open(running.request_id)
    await until(lambda: a.status()["completed_requests"] == 1)


async def test_a_draining_process_hands_off_resumable_followers_of_a_waiting_leader(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    b = shared(gate, max_concurrent=1, resume_grace_sec=10)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    leader = await a.submit("Q")
    leader_reader = Reader(a, a.resumable(leader))
    follower = await a.submit("Q")
    assert follower.share.leader is leader  # it waits on the leader's answer: no place of its own
    follower_reader = Reader(a, a.resumable(follower))
    behind = Stream(b, await b.submit("behind"))  # arrived after both, on the other process
    await until(lambda: leader_reader.names == ["queued"] and follower_reader.names == ["queued"])
    a.begin_drain()
    # Not ended with shutting_down: told to reconnect, like any waiting resumable guest.
    assert (await follower_reader.done())[-1] == "reconnect"
    assert (await leader_reader.done())[-1] == "reconnect"
    assert a.status()["cancelled_requests"] == 0 and a.status()["total_requests"] == 1
    resumed = []
    for ticket, old in ((leader, leader_reader), (follower, follower_reader)):
        res = await b.adopt(ticket.request_id)
        assert res is not None
        resumed.append((Reader(b, res, after=old.seqs[-1]), old))
    # The follower lined up where it arrived: after its leader, before "behind".
    assert [b.resumes.get(t.request_id).ticket.position for t in (leader, follower)] == [1, 2]
    gate.open(running.request_id)
    for ticket in (leader, follower, behind.ticket):
        gate.open(ticket.request_id)
    for reader, old in resumed:
        assert (await reader.done())[-1] == "workflow_complete"
        assert reader.seqs[0] == old.seqs[-1] + 1
    await behind.done()
    assert gate.started == ["running", "Q", "Q", "behind"]
    assert b.status()["completed_requests"] == 3 and b.status()["total_requests"] == 3


async def test_an_adopted_hand_off_is_never_recorded_as_abandoned(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=0.5)
    b = shared(gate, max_concurrent=1, resume_grace_sec=0.5)
    ended: list[Any] = []
    b.add_listener(ended.append)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    ticket = await a.submit("w")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: reader.names == ["queued"])
    a.begin_drain()
    assert (await reader.done())[-1] == "reconnect"
    res = await b.adopt(ticket.request_id)
    assert res is not None
    back = Reader(b, res, after=reader.seqs[-1])
    # Left due in the hand-off list (as a process of an earlier version adopting it would):
    # its lease is renewed by b, so no process claims it as abandoned.
    backend = admission(b)
    await backend.client.zadd(backend.handoffs_key, {ticket.request_id: 1})
    await asyncio.sleep(1.5)  # past the hand-off's deadline, several renewal passes
    assert ended == [] and ticket.request_id in b.live.by_id
    gate.open(running.request_id)
    gate.open(ticket.request_id)
    assert (await back.done())[-1] == "workflow_complete"
    assert [r.status.value for r in ended] == ["completed"]


async def test_a_draining_process_leaves_overdue_hand_offs_to_a_live_one(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    # Only the draining process is there when the hand-offs are overdue: it must not take
    # them (it records nothing any more); the next live process records them.
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=0.3)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    waiting = [await a.submit(f"w{i}") for i in range(2)]
    readers = [Reader(a, a.resumable(t)) for t in waiting]
    await until(lambda: all(r.names == ["queued"] for r in readers))
    ended_a: list[Any] = []
    a.add_listener(ended_a.append)
    a.begin_drain()
    for reader in readers:
        assert (await reader.done())[-1] == "reconnect"
    await asyncio.sleep(1.5)  # overdue, and several renewal passes of the draining process
    listed = await admission(a).client.zrange(admission(a).handoffs_key, 0, -1)
    assert sorted(listed) == sorted(t.request_id for t in waiting)
    b = shared(gate, max_concurrent=1, resume_grace_sec=0.3)
    ended_b: list[Any] = []
    b.add_listener(ended_b.append)
    await until(lambda: len(ended_b) == 2, timeout=5)
    assert sorted(r.request_id for r in ended_b) == sorted(t.request_id for t in waiting)
    assert ended_a == []
    gate.open(running.request_id)
    await until(lambda: a.status()["completed_requests"] == 1)


async def test_handed_off_followers_line_up_where_they_arrived_among_other_processes_guests(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, resume_grace_sec=10)
    b = shared(gate, max_concurrent=1, resume_grace_sec=10)
    running = Stream(b, await b.submit("running"))
    await until(lambda: gate.started == ["running"])
    leader = await a.submit("Q")
    leader_reader = Reader(a, a.resumable(leader))
    await until(lambda: a.admission.line_score(leader) is not None)
    early = Stream(b, await b.submit("early"))
    # Well apart (each process maps its own clock onto Redis's only to a few ms).
    await asyncio.sleep(0.1)
    follower = await a.submit("Q")
    assert follower.share.leader is leader
    follower_reader = Reader(a, a.resumable(follower))
    await asyncio.sleep(0.1)
    late = Stream(b, await b.submit("late"))
    await until(lambda: follower_reader.names == ["queued"] and late.events)
    a.begin_drain()
    assert (await follower_reader.done())[-1] == "reconnect"
    assert (await leader_reader.done())[-1] == "reconnect"
    adopted = [await b.adopt(t.request_id) for t in (leader, follower)]
    # The follower lined up where it arrived: after "early", before "late" (not just
    # behind its leader, and not as if it had arrived when its leader first did).
    positions = [r.ticket.position for r in adopted if r is not None]
    assert positions == [1, 3]
    await until(lambda: [s.ticket.position for s in (early, late)] == [2, 4])
    for stream in (running, early, late):
        gate.open(stream.ticket.request_id)
    for ticket in (leader, follower):
        gate.open(ticket.request_id)
    await late.done()


async def test_a_drain_hands_off_waiting_guests_while_a_follower_here_follows_another_process(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = pair(shared, gate, max_concurrent=1, resume_grace_sec=10)
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    await announced(b, "q")
    follower = await b.submit("Q")
    assert isinstance(follower.share.leader, RemoteLeader)  # it has no place in line, nor a score
    follower_reader = Reader(b, b.resumable(follower))
    waiting = await b.submit("waiting")
    waiting_reader = Reader(b, b.resumable(waiting))
    await until(lambda: waiting_reader.names == ["queued"] and follower_reader.names)
    b.begin_drain()
    assert (await waiting_reader.done())[-1] == "reconnect"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    gate.open(leader.ticket.request_id)
    await leader.done()
