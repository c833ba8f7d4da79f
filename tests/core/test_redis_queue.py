"""One queue shared through the real Redis: several managers stand in for several processes.

Each manager has its own connections, process id and leases, exactly as a
separate uvicorn worker would; tests/e2e/test_shared_queue.py runs real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from guest_queue.core.backends.redis.link import UNREACHABLE
from guest_queue.core.errors import QueueFull, Unavailable

from ..services import PrivateRedis, closed_port, delete_prefix
from .conftest import Factory, GateWorkflow, Stream, admission, until
from .test_answer_cache import MemoryCache


async def test_one_limit_and_one_line_across_processes(shared: Factory, gate: GateWorkflow) -> None:
    a, b = shared(gate, max_concurrent=2), shared(gate, max_concurrent=2)
    streams = [Stream((a, b)[i % 2], await (a, b)[i % 2].submit(f"r{i}")) for i in range(6)]
    await until(lambda: len(gate.started) == 2)
    await asyncio.sleep(0.3)  # Long enough for a wrongly admitted third to start.
    assert gate.started == ["r0", "r1"]
    # Positions count every process's waiters: r2..r5 are 1..4 wherever they wait.
    await until(lambda: [s.ticket.position for s in streams[2:]] == [1, 2, 3, 4])
    # Either process can say where the other's requests stand.
    waiting_id = streams[5].ticket.request_id
    found = await (a if b.live.get(waiting_id) is not None else b).find(waiting_id)
    assert found is not None
    created = datetime.fromisoformat(found.pop("created_at"))
    assert abs((datetime.now(UTC) - created).total_seconds()) < 10
    assert found == {
        "request_id": waiting_id,
        "status": "queued",
        "queue_position": 4,
        "started_at": None,
        "finished_at": None,
        "wait_ms": None,
        "processing_ms": None,
        "cached": False,
    }
    processing_id = streams[0].ticket.request_id
    found = await (a if b.live.get(processing_id) is not None else b).find(processing_id)
    assert found == {
        "request_id": processing_id,
        "status": "processing",
        "created_at": None,
        "started_at": None,
        "finished_at": None,
        "wait_ms": None,
        "processing_ms": None,
        "cached": False,
    }
    assert await a.find("no-such-request") is None
    assert await a.admission.reachable() is True
    for i in range(6):
        gate.open(streams[i].ticket.request_id)
        await streams[i].done()
        await until(lambda i=i: len(gate.started) == min(6, i + 3))
    assert gate.started == [f"r{i}" for i in range(6)]
    assert gate.max_running == 2
    assert all(s.names[-1] == "workflow_complete" for s in streams)


async def test_the_line_is_full_for_everyone_at_the_global_size(
    shared: Factory, gate: GateWorkflow
) -> None:
    a = shared(gate, max_concurrent=1, max_queue_size=2)
    b = shared(gate, max_concurrent=1, max_queue_size=2)
    first = Stream(a, await a.submit("r0"))
    waiting = [Stream(b, await b.submit("r1")), Stream(a, await a.submit("r2"))]
    for manager in (a, b):
        with pytest.raises(QueueFull) as refused:
            await manager.submit("one too many")
        assert refused.value.retry_after >= 1
    assert waiting[1].ticket.position == 2
    await until(lambda: waiting[1].events and waiting[1].events[0].data["queue_size"] == 2)
    assert (a.status()["rejected_requests"], b.status()["rejected_requests"]) == (1, 1)
    # A place frees up: exactly one more fits again.
    await waiting[0].disconnect()
    await until(lambda: admission(b).queue_size == 1)
    third = Stream(b, await b.submit("r3"))
    await until(lambda: third.ticket.position == 2 and waiting[1].ticket.position == 1)
    for stream in (first, waiting[1], third):
        gate.open(stream.ticket.request_id)
    await first.done()
    await waiting[1].done()
    await third.done()
    assert gate.started == ["r0", "r2", "r3"]


async def test_a_dead_process_gives_its_slot_back_when_the_lease_runs_out(
    shared: Factory, gate: GateWorkflow
) -> None:
    a = shared(gate, max_concurrent=1, lease_sec=1.0)
    b = shared(gate, max_concurrent=1, lease_sec=1.0)
    Stream(a, await a.submit("holder"))
    waiter = Stream(b, await b.submit("waiter"))
    await until(lambda: gate.started == ["holder"])
    # The process holding the slot stops dead: no renewals, no goodbye to Redis.
    for task in list(a.stopper.background):
        task.cancel()
    a.admission.leave = lambda ticket: None  # type: ignore[method-assign]
    died = time.monotonic()
    await until(lambda: gate.started == ["holder", "waiter"], timeout=5)
    assert time.monotonic() - died < 2.0  # Within the lease (1 s) and one renewal pass.
    gate.open(waiter.ticket.request_id)
    assert (await waiter.done())[-1] == "workflow_complete"


async def test_a_cancel_that_redis_py_swallows_still_stops_the_renewals(
    shared: Factory, gate: GateWorkflow
) -> None:
    manager = shared(gate, max_concurrent=1, lease_sec=1.0)
    link = admission(manager).link
    real_run = link.run

    async def swallowing_run(*args: Any) -> Any:
        # A cancel arriving while a command is in flight, lost inside the client.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.5)
        return await real_run(*args)

    link.run = swallowing_run  # type: ignore[method-assign,assignment]
    await until(lambda: len(manager.stopper.background) >= 2)
    await asyncio.sleep(1.2)  # the renewal loop is inside swallowing_run now
    tasks = list(manager.stopper.background)
    for task in tasks:
        task.cancel()
    _, running = await asyncio.wait(tasks, timeout=2)
    assert not running  # a renewal loop that ran on would keep a dead process's slots


@pytest.mark.parametrize(("lease", "retry_after"), [(1.2, 2), (0.6, 1)])
async def test_unreachable_redis_refuses_at_once_with_503(
    shared: Factory, caplog: pytest.LogCaptureFixture, lease: float, retry_after: int
) -> None:
    manager = shared(
        GateWorkflow(), redis_url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=lease
    )
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await manager.submit("anyone?")
        assert time.monotonic() - started < 1.5
        # Retry once every lease this process held has surely run out: ceil(lease), >= 1 s.
        assert refused.value.status_code == 503 and refused.value.retry_after == retry_after
        # The same words whether Redis was tried (the first) or is quiet after a failure.
        assert refused.value.message == UNREACHABLE
    assert not await manager.admission.reachable()
    assert await manager.find("0b0e6c1e-6e2b-4d47-9a3b-2f0f5c7f6a11") is None
    status = await manager.shared_status()
    assert status["queue_reachable"] is False and status["rejected_requests"] == 3
    assert status["total_requests"] == 0
    await asyncio.sleep(lease / 2)  # renewal passes while Redis has never been reached
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_redis_losing_the_queue_admits_nobody_extra(
    shared: Factory, gate: GateWorkflow, redis_test_url: str, redis_test_prefix: str
) -> None:
    a = shared(gate, max_concurrent=1)
    b = shared(gate, max_concurrent=1)
    holder = Stream(a, await a.submit("holder"))
    waiter = Stream(b, await b.submit("waiter"))
    await until(lambda: gate.started == ["holder"])
    await delete_prefix(
        redis_test_url, redis_test_prefix
    )  # What a restart without persistence leaves.
    late = Stream(b, await b.submit("late"))
    assert not late.ticket.place.admitted  # The slot Redis forgot is still taken.
    await asyncio.sleep(1.0)  # Renewals put the holder and the waiter back.
    assert gate.started == ["holder"]
    for stream in (holder, waiter, late):
        gate.open(stream.ticket.request_id)
    for stream in (holder, waiter, late):
        assert (await stream.done())[-1] == "workflow_complete"
    assert gate.started == ["holder", "waiter", "late"] and gate.max_running == 1


async def test_status_adds_up_every_process(shared: Factory, gate: GateWorkflow) -> None:
    a, b = shared(gate), shared(gate)
    for manager, query in ((a, "x"), (b, "y"), (b, "z")):
        stream = Stream(manager, await manager.submit(query))
        gate.open(stream.ticket.request_id)
        await stream.done()
    held = Stream(a, await a.submit("held"))
    await until(lambda: "held" in gate.started)

    async def merged() -> dict[str, Any]:
        return await a.shared_status()

    deadline = time.monotonic() + 3
    status = await merged()
    while status["completed_requests"] != 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        status = await merged()
    assert status["backend"] == "redis" and status["processes"] == 2
    assert status["total_requests"] == 4 and status["completed_requests"] == 3
    assert status["active_requests"] == 1 and status["queue_size"] == 0
    assert status["process"]["total_requests"] == 2
    gate.open(held.ticket.request_id)
    await held.done()


async def test_closing_a_process_hands_back_its_places(
    shared: Factory, gate: GateWorkflow, redis_test_url: str, redis_test_prefix: str
) -> None:
    a = shared(gate, max_concurrent=1)
    Stream(a, await a.submit("busy"))
    Stream(a, await a.submit("waiting"))
    await until(lambda: gate.started == ["busy"])
    await a.close()
    client = aioredis.Redis.from_url(redis_test_url)
    try:
        tag = "{" + redis_test_prefix + "}"
        assert await client.zcard(f"{tag}:waiting") == 0
        assert await client.scard(f"{tag}:active") == 0  # type: ignore[misc]
        assert await client.zcard(f"{tag}:processes") == 0
    finally:
        await client.aclose()


async def test_a_long_outage_ends_waiters_and_lets_processing_finish(
    shared: Factory, gate: GateWorkflow, private_redis: PrivateRedis
) -> None:
    a = shared(gate, max_concurrent=1, lease_sec=0.9, redis_url=private_redis.url)
    holder = Stream(a, await a.submit("holder"))
    waiter = Stream(a, await a.submit("waiter"))
    await until(lambda: gate.started == ["holder"])
    private_redis.stop()
    # Once its lease has run out nobody keeps the waiter's place: it is told so.
    assert (await waiter.done(timeout=5))[-1] == "error"
    assert waiter.events[-1].data == {"error": UNREACHABLE, "code": "unavailable"}
    gate.open(holder.ticket.request_id)
    assert (await holder.done())[-1] == "workflow_complete"
    with pytest.raises(Unavailable):
        await a.submit("while down")
    private_redis.start()
    await asyncio.sleep(1.1)  # The quiet second after a failure, then Redis is tried again.
    after = Stream(a, await a.submit("after"))
    await until(lambda: "after" in gate.started, timeout=5)
    gate.open(after.ticket.request_id)
    assert (await after.done())[-1] == "workflow_complete"
    status = a.status()
    assert (status["completed_requests"], status["failed_requests"]) == (2, 1)
    assert status["rejected_requests"] == 1


async def test_a_slot_whose_lease_ran_out_stops_its_workflow(
    shared: Factory,
    gate: GateWorkflow,
    redis_test_url: str,
    redis_test_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = shared(gate, max_concurrent=1)
    held = Stream(a, await a.submit("held"))
    await until(lambda: gate.started == ["held"])
    # As if this process had stalled past its lease and Redis had given the slot away.
    client = aioredis.Redis.from_url(redis_test_url)
    try:
        await client.srem("{" + redis_test_prefix + "}:active", held.ticket.request_id)  # type: ignore[misc]
    finally:
        await client.aclose()
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        assert (await held.done(timeout=3))[-1] == "error"
    assert held.events[-1].data == {
        "error": "This request's place in the queue expired.",
        "code": "unavailable",
    }
    await until(lambda: gate.closed == ["held"])  # The workflow was stopped, not left running.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 slot(s) expired before this process renewed them; stopping their answers" in (
        warnings
    )


async def test_followers_go_back_in_the_shared_line_when_their_leader_fails(
    shared: Factory,
) -> None:
    # Before any chunk: once chunks were streamed live, they share its failure.
    gate = GateWorkflow(chunks=0)
    a = shared(gate, MemoryCache(), max_concurrent=1)
    b = shared(gate, max_concurrent=1)
    leader = Stream(a, await a.submit("Q"))
    followers = [Stream(a, await a.submit("Q")) for _ in range(2)]
    other = Stream(b, await b.submit("other"))
    await until(lambda: gate.started == ["Q"])
    gate.fail(leader.ticket.request_id)
    # The first follower lines up again behind "other", which was in line before it.
    await until(lambda: gate.started == ["Q", "other"])
    gate.open(other.ticket.request_id)
    await until(lambda: len(gate.started) == 3)
    assert gate.started[2] == "Q" and gate.max_running == 1
    for request_id in list(gate.gates):
        gate.open(request_id)
    for follower in followers:
        assert (await follower.done())[-1] == "workflow_complete"
    assert [f.events[-1].data["cached"] for f in followers].count(True) == 1


async def test_a_redis_that_never_answers_is_a_quick_503_not_a_hang(shared: Factory) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        manager = shared(GateWorkflow(), redis_url=f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await manager.submit("hello?")
        assert time.monotonic() - started < 1.0  # GUEST_QUEUE_REDIS_TIMEOUT_SEC is 0.25 s here.
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await manager.submit("again?")
        assert time.monotonic() - started < 0.1  # Refused without waiting on Redis again.
        assert not await manager.admission.reachable()
        await manager.close()
    finally:
        silent.close()


async def test_a_renewal_on_its_way_never_brings_back_a_request_that_left(
    shared: Factory, gate: GateWorkflow, redis_test_url: str, redis_test_prefix: str
) -> None:
    a, b = shared(gate, max_concurrent=1), shared(gate, max_concurrent=1)
    Stream(b, await b.submit("holder"))
    waiter = Stream(a, await a.submit("waiter"))
    await until(lambda: gate.started == ["holder"] and waiter.events)
    queue = admission(a)
    send = queue.link.run

    async def slow_renewal(script: Any, keys: list[str], args: list[Any]) -> Any:
        # Private: the backend's Lua scripts are its own; slowing only the sync needs its identity.
        if script is queue._sync:
            await asyncio.sleep(0.3)  # A slow network: the renewal is still on its way...
        return await send(script, keys, args)

    queue.link.run = slow_renewal  # type: ignore[method-assign]
    # Private: asks for a sync pass now instead of waiting for the next tick.
    queue._dirty.set()
    await asyncio.sleep(0.05)
    await waiter.disconnect()  # ...when the waiter leaves.
    await asyncio.sleep(0.6)
    client = aioredis.Redis.from_url(redis_test_url)
    try:
        tag = "{" + redis_test_prefix + "}"
        rid = waiter.ticket.request_id
        assert await client.zscore(f"{tag}:waiting", rid) is None
        assert not await client.sismember(f"{tag}:active", rid)  # type: ignore[misc]
    finally:
        await client.aclose()


async def test_a_failing_renewal_pass_is_restarted_and_places_are_kept(
    shared: Factory, gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    a = shared(gate, max_concurrent=1)
    redis_admission = admission(a)
    # Private: the lease renewal, made to fail; no public seam.
    real = redis_admission._renew
    failures = [RuntimeError("a bug in the renewal pass")]

    async def flaky() -> None:
        if failures:
            raise failures.pop()
        await real()

    redis_admission._renew = flaky  # type: ignore[method-assign]
    first = Stream(a, await a.submit("first"))
    waiter = Stream(a, await a.submit("waiter"))
    await until(lambda: not failures)
    # Three leases' time: without renewals both places would have expired by now.
    await asyncio.sleep(3 * redis_admission.options.lease_sec)
    waiting_key, active_key = redis_admission.keys[:2]
    client = redis_admission.client
    assert await client.zscore(waiting_key, waiter.ticket.request_id) is not None
    assert await client.sismember(active_key, first.ticket.request_id)  # type: ignore[misc]
    assert "'queue admission' died; restarting" in caplog.text
    gate.open(first.ticket.request_id)
    gate.open(waiter.ticket.request_id)
    await waiter.done()


async def test_every_key_of_the_queue_expires(
    shared: Factory, gate: GateWorkflow, redis_test_url: str, redis_test_prefix: str
) -> None:
    a = shared(gate, max_concurrent=1)
    first = Stream(a, await a.submit("first"))
    waiter = Stream(a, await a.submit("waiter"))
    await asyncio.sleep(admission(a).options.lease_sec)  # a renewal pass or two
    client = aioredis.Redis.from_url(redis_test_url, decode_responses=True)

    async def ttls() -> dict[str, int]:
        keys = [key async for key in client.scan_iter(match=f"{{{redis_test_prefix}}}:*")]
        return {key: await client.pttl(key) for key in keys}

    try:
        live = await ttls()
        assert {k.rsplit(":", 1)[1] for k in live} >= {"waiting", "active", "leases", "meta"}
        assert all(ttl > 0 for ttl in live.values()), live
        gate.open(first.ticket.request_id)
        gate.open(waiter.ticket.request_id)
        await waiter.done()
        await a.close()
        assert all(ttl > 0 for ttl in (await ttls()).values())
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("policy", "maxmemory", "warned"),
    [
        ("allkeys-lru", "100mb", True),
        ("volatile-lru", "100mb", True),
        ("noeviction", "100mb", False),
        ("allkeys-lru", "0", False),
    ],
)
async def test_an_eviction_policy_that_could_drop_the_queue_is_reported(
    shared: Factory,
    gate: GateWorkflow,
    private_redis: PrivateRedis,
    caplog: pytest.LogCaptureFixture,
    policy: str,
    maxmemory: str,
    warned: bool,
) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    await client.config_set("maxmemory", maxmemory)
    await client.config_set("maxmemory-policy", policy)
    await client.aclose()
    a = shared(gate, redis_url=private_redis.url)
    await asyncio.sleep(0.3)
    if warned:
        assert len(a.warnings) == 1 and policy in a.warnings[0]
        assert "noeviction" in a.warnings[0] and a.warnings[0] in caplog.text
    else:
        assert a.warnings == []
