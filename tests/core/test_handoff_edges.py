"""Hand-offs at a drain, at their edges: adopting one Redis has admitted meanwhile, the
deadline a guest has to come back, followers' leases, and admissions racing the hand-off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from guest_queue.core.backends.base import Ticket
from guest_queue.core.backends.redis import RedisAdmission
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import RequestRecord, Status
from guest_queue.core.stream import DISCONNECTED

from .conftest import Factory, GateWorkflow, admission, until
from .test_answer_cache import MemoryCache
from .test_resume import Reader

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
    res = await b.adopt(ticket.request_id)
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
    res = await b.adopt(ticket.request_id)
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
