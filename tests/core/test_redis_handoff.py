"""Hand-offs at a drain on the shared queue: what is handed off and counted where, unadopted
ones recorded once, followers handed off too, adopting one Redis has admitted meanwhile, the
deadline a guest has to come back, and admissions racing the hand-off."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from guest_queue.core.answers.sharing import RemoteLeader
from guest_queue.core.backends.base import Ticket
from guest_queue.core.backends.redis import RedisAdmission
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import RequestRecord, Status
from guest_queue.core.stream import DISCONNECTED

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
    assert await b.handoff.adopt(waiting[0].request_id) is None  # too late to adopt it now
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
        res = await b.handoff.adopt(ticket.request_id)
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
    res = await b.handoff.adopt(ticket.request_id)
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
    adopted = [await b.handoff.adopt(t.request_id) for t in (leader, follower)]
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


ABANDONED = "Nobody came back for the request after the server restarted."


async def redis_ms(backend: RedisAdmission) -> int:
    seconds, micros = await backend.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def behind_a_running_one(
    manager: QueueManager, gate: GateWorkflow, *queries: str, client: str | None = None
) -> tuple[Ticket, list[tuple[Ticket, Reader]]]:
    """A running resumable request, then resumable ones waiting behind it (``client``'s)."""
    running = await manager.submit("running")
    Reader(manager, manager.resumable(running))
    await until(lambda: gate.started == ["running"])
    waiting = []
    for query in queries:
        ticket = await manager.submit(query, client_hint=client)
        waiting.append((ticket, Reader(manager, manager.resumable(ticket))))
    await until(lambda: all(r.names == ["queued"] for _, r in waiting))
    return running, waiting


async def test_an_adopted_waiting_request_counts_once_and_replays_from_its_first_event(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    grace_ms = 600_000
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=grace_ms / 1000)
    b = shared(gate, max_concurrent=1, resume_grace_sec=grace_ms / 1000)
    running, [(ticket, old)] = await behind_a_running_one(a, gate, "waiting")
    backend = admission(a)
    before = await redis_ms(backend)
    a.begin_drain()
    assert (await old.done())[-1] == "reconnect"
    after = await redis_ms(backend)
    # The guest has exactly the resume grace to come back.
    deadline = await backend.client.zscore(backend.handoffs_key, ticket.request_id)
    assert deadline is not None and before + grace_ms <= deadline <= after + grace_ms
    res = await b.handoff.adopt(ticket.request_id)
    assert res is not None
    # Waiting in b's line: counted once there, not also as following a leader.
    assert b.status()["queue_size"] == 1 and b.status()["active_requests"] == 0
    # A guest resuming from the start hears every event, the first one included.
    replay = Reader(b, res, after=0)
    await until(lambda: replay.events)
    assert replay.events[0] == old.events[0] and replay.seqs[0] == 1
    gate.open(running.request_id)
    await until(lambda: gate.started == ["running", "waiting"])
    gate.open(ticket.request_id)
    resumed = Reader(b, res, after=old.seqs[-1])
    assert (await resumed.done())[-1] == "workflow_complete"


async def test_adopting_a_hand_off_redis_admitted_meanwhile_starts_it_at_once(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    b = shared(gate, max_concurrent=1, resume_grace_sec=10)
    running, [(ticket, old)] = await behind_a_running_one(a, gate, "waiting")
    a.begin_drain()
    assert (await old.done())[-1] == "reconnect"
    # The running request ends: the hand-off, first in line, takes the free slot while
    # its guest is away.
    gate.open(running.request_id)
    backend = admission(a)
    active_key = backend.keys[1]
    for _ in range(500):
        if await backend.client.sismember(active_key, ticket.request_id):  # type: ignore[misc]
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("never admitted")
    res = await b.handoff.adopt(ticket.request_id)
    assert res is not None
    # It runs on b at once: in a slot, not back in line.
    assert b.status()["queue_size"] == 0 and b.status()["active_requests"] == 1
    await until(lambda: gate.started == ["running", "waiting"])
    resumed = Reader(b, res, after=old.seqs[-1])
    gate.open(ticket.request_id)
    assert (await resumed.done())[-1] == "workflow_complete"


async def test_a_handed_off_follower_nobody_adopts_ends_while_its_old_process_still_drains(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=0.5)
    b = shared(gate, max_concurrent=1, resume_grace_sec=0.5)
    ended: list[RequestRecord] = []
    b.add_listener(ended.append)
    running, [(leader, leader_reader), (follower, follower_reader)] = await behind_a_running_one(
        a, gate, "Q", "Q", client="guest-1"
    )
    assert follower.share.leader is leader
    a.begin_drain()
    assert (await leader_reader.done())[-1] == "reconnect"
    assert (await follower_reader.done())[-1] == "reconnect"
    # The draining process keeps no lease of the follower's (held for its client's cap,
    # the hand-off's is now its only one): once the grace is over, another process
    # records both, as guests who left.
    await until(lambda: len(ended) == 2, timeout=4)
    assert {r.request_id for r in ended} == {leader.request_id, follower.request_id}
    for record in ended:
        assert record.status is Status.CANCELLED
        assert (record.error_code, record.error_message) == (DISCONNECTED, ABANDONED)
    assert gate.started == ["running"] and a.status()["active_requests"] == 1
    gate.open(running.request_id)


async def test_the_drain_hands_off_the_others_when_redis_has_just_admitted_one(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    running, [(admitted, _), (waiting, reader)] = await behind_a_running_one(a, gate, "w1", "w2")
    # Another process's leave moved w1 into a slot; a has not heard of it yet.
    backend = admission(a)
    await backend.client.zrem(backend.keys[0], admitted.request_id)
    await backend.client.sadd(backend.keys[1], admitted.request_id)  # type: ignore[misc]
    a.begin_drain()
    assert (await reader.done())[-1] == "reconnect"
    handed = await backend.client.zrange(backend.handoffs_key, 0, -1)
    assert handed == [waiting.request_id]
    gate.open(running.request_id)


@pytest.mark.parametrize("redis_fails", [False, True])
async def test_a_hand_off_admitted_here_while_on_its_way_is_withdrawn(
    shared: Factory,
    gate: GateWorkflow,
    redis_fails: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    running, [(ticket, reader)] = await behind_a_running_one(a, gate, "waiting")
    backend = admission(a)
    rid = ticket.request_id
    run = backend.link.run

    async def admitted_meanwhile(script: Any, keys: list[str], args: list[Any]) -> Any:
        reply = await run(script, keys, args)
        # Private: the hand-off script's identity and the admission message's handler stage
        # the race (admitted before the script's reply), which no public call can order.
        if script is backend._hand_off:
            # Another process's leave admitted it; its message came before the reply.
            await backend.client.zrem(backend.keys[0], rid)
            await backend.client.sadd(backend.keys[1], rid)  # type: ignore[misc]
            backend._admitted([rid])
            if redis_fails:
                backend.client.delete = failing  # type: ignore[method-assign,assignment]
        return reply

    delete = backend.client.delete

    async def failing(*names: str) -> int:
        backend.client.delete = delete  # type: ignore[method-assign]
        raise RedisConnectionError("gone")

    backend.link.run = admitted_meanwhile  # type: ignore[method-assign]
    a.begin_drain()
    # It stays a's own: it runs there, its guest is not sent elsewhere.
    await until(lambda: gate.started == ["running", "waiting"])
    gate.open(running.request_id)
    gate.open(rid)
    assert (await reader.done())[-1] == "workflow_complete"
    if redis_fails:
        assert "Could not withdraw 1 hand-off(s) from Redis" in caplog.messages
    else:
        assert await backend.client.zrange(backend.handoffs_key, 0, -1) == []
        assert not await backend.client.exists(backend.handoff_prefix + rid)


async def test_a_drain_that_hands_off_guests_says_how_many_and_counts_them_no_more(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = shared(gate, max_concurrent=2, shutdown_grace_sec=5, resume_grace_sec=10)
    shared(gate, max_concurrent=2, resume_grace_sec=10)  # a live process to hand them to
    running = [await a.submit(f"running {i}") for i in range(2)]
    for ticket in running:
        Reader(a, a.resumable(ticket))
    await until(lambda: len(gate.started) == 2)
    waiting = [await a.submit(f"waiting {i}") for i in range(2)]
    readers = [Reader(a, a.resumable(t)) for t in waiting]
    await until(lambda: all(r.names == ["queued"] for r in readers))
    assert a.status()["total_requests"] == 4
    with caplog.at_level(logging.INFO, logger="guest_queue"):
        a.begin_drain()
        for reader in readers:
            assert (await reader.done())[-1] == "reconnect"
    # The adopting process counts the two handed off; this one only what it ran.
    assert a.status()["total_requests"] == 2
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "2 waiting request(s) left to the other processes" in infos
    for ticket in running:
        gate.open(ticket.request_id)


async def test_a_drain_hands_off_a_resumable_follower_of_a_plain_waiting_leader(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    shared(gate, max_concurrent=1, resume_grace_sec=10)  # a live process to hand it to
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    leader = Stream(a, await a.submit("Q"))  # a plain stream: nothing to hand off
    follower = await a.submit("Q")
    assert follower.share.leader is leader.ticket
    reader = Reader(a, a.resumable(follower))
    await until(lambda: reader.names == ["queued"] and leader.names == ["queued"])
    a.begin_drain()
    # The only request to hand off is a follower: it is handed off all the same.
    assert (await reader.done())[-1] == "reconnect"
    assert (await leader.done())[-1] == "error"
    assert leader.events[-1].data["code"] == "shutting_down"
    gate.open(running.request_id)
