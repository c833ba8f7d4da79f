"""Several real uvicorn processes sharing one queue on the real Redis.

A probe workflow in every process records in Redis the order requests start
and how many run at once, so the limits are checked across processes, not
inside one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx
import redis

from ..services import PrivateRedis
from . import chaos
from .conftest import Server, ServerFactory
from .test_servers import names, stream_events

PROBE = "tests.scripted.RedisProbeWorkflow"


class Guest:
    """One guest's stream, read in the background."""

    def __init__(self, client: httpx.AsyncClient, server: Server, query: str) -> None:
        self.server = server
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(stream_events(client, server.url, query, self.events))

    async def reached(self, event: str, timeout: float = 10) -> dict[str, Any]:
        """The first event of that name, once it has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.events:
                if item["event"] == event:
                    return item
            if self.task.done():
                self.task.result()
                break
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {event!r} event; got {names(self.events)}")

    async def done(self) -> list[str]:
        await asyncio.wait_for(self.task, 30)
        return names(self.events)


def shared_env(url: str, prefix: str, *, queue_url: str = "", **env: str) -> dict[str, str]:
    """Settings for processes sharing the queue at ``queue_url`` (default: ``url``).

    The probe workflow always writes to ``url``, the Redis that stays up.
    """
    return {
        "GUEST_QUEUE_BACKEND": "redis",
        "GUEST_QUEUE_REDIS_URL": queue_url or url,
        "GUEST_QUEUE_REDIS_PREFIX": prefix,
        "GUEST_QUEUE_LEASE_SEC": "1.5",
        "GUEST_QUEUE_REDIS_TIMEOUT_SEC": "0.4",
        "GUEST_WORKFLOW": PROBE,
        "GUEST_TEST_PROBE_REDIS_URL": url,
        "GUEST_TEST_PROBE_KEY": "{" + prefix + "}:probe",
        "GUEST_SHUTDOWN_GRACE_SEC": "0",
        **env,
    }


async def test_three_processes_keep_one_limit_one_line_and_one_size(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str, probe: redis.Redis
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_MAX_CONCURRENT_REQUESTS="2",
        GUEST_MAX_QUEUE_SIZE="4",
    )
    servers = [start_server(**env) for _ in range(3)]
    async with httpx.AsyncClient(timeout=30) as client:
        guests = []
        for i in range(6):
            # Odd ones take 0.5 s longer: the two slots free up apart, so each admission's
            # start (heard through pub/sub on another process) comes well before the next.
            guest = Guest(client, servers[i % 3], f"r{i} sleep={1.5 + 0.5 * (i % 2)} chunks=2")
            await guest.reached("queued")
            guests.append(guest)
        # Positions count every process's waiters, in arrival order.
        assert [(await g.reached("queued"))["data"]["queue_position"] for g in guests] == [
            1, 1, 1, 2, 3, 4,
        ]  # fmt: skip
        assert (await guests[-1].reached("queued"))["data"]["queue_size"] == 4
        for server in servers:
            refused = await client.post(f"{server.url}/api/v1/guest/chat", json={"query": "x"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "queue_full"
            assert int(refused.headers["retry-after"]) >= 1
        # Any process can say where any live request stands.
        last, first = guests[-1].events[0]["request_id"], guests[0].events[0]["request_id"]
        elsewhere = await client.get(f"{servers[0].url}/api/v1/guest/queue/request/{last}")
        assert elsewhere.status_code == 200, elsewhere.text
        assert elsewhere.json()["status"] == "queued"
        assert elsewhere.json()["queue_position"] == 4 and elsewhere.json()["created_at"]
        elsewhere = await client.get(f"{servers[1].url}/api/v1/guest/queue/request/{first}")
        assert elsewhere.json()["status"] == "processing"
        status = (await client.get(f"{servers[0].url}/api/v1/guest/queue/status")).json()
        assert status["backend"] == "redis" and status["queue_size"] == 4
        assert status["active_requests"] == 2 and status["rejected_requests"] >= 1
        for guest in guests:
            events = await guest.done()
            assert events[-1] == "workflow_complete" and events.count("processing") == 1
    key = "{" + redis_test_prefix + "}:probe"
    started = [q.split()[0] for q in cast(list[str], probe.lrange(f"{key}:started", 0, -1))]
    assert started == [f"r{i}" for i in range(6)]
    assert int(cast(str, probe.get(f"{key}:max_running"))) == 2


async def test_a_killed_process_gives_its_slot_back_within_the_lease(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str
) -> None:
    env = shared_env(redis_test_url, redis_test_prefix, GUEST_MAX_CONCURRENT_REQUESTS="1")
    doomed, survivor = start_server(**env), start_server(**env)
    async with httpx.AsyncClient(timeout=30) as client:
        holder = Guest(client, doomed, "holder sleep=60")
        await holder.reached("processing")
        waiter = Guest(client, survivor, "waiter chunks=2")
        await waiter.reached("queued")
        await asyncio.sleep(0.5)
        assert "processing" not in names(waiter.events)
        doomed.process.kill()  # SIGKILL: no drain, no goodbye to Redis.
        killed = time.monotonic()
        await waiter.reached("processing", timeout=10)
        reclaimed = time.monotonic() - killed
        assert reclaimed < 1.5 + 1.5, f"slot reclaimed after {reclaimed:.1f} s"
        assert (await waiter.done())[-1] == "workflow_complete"
        holder.task.cancel()
        await asyncio.gather(holder.task, return_exceptions=True)


async def test_redis_down_means_clean_503s_and_service_resumes_after(
    start_server: ServerFactory,
    private_redis: PrivateRedis,
    redis_test_url: str,
    redis_test_prefix: str,
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        queue_url=private_redis.url,
        GUEST_MAX_CONCURRENT_REQUESTS="2",
    )
    servers = [start_server(**env) for _ in range(2)]
    chat = [f"{s.url}/api/v1/guest/chat/simple" for s in servers]
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(chat[0], json={"query": "before"})).status_code == 200
        in_flight = Guest(client, servers[1], "in-flight sleep=2 chunks=2")
        await in_flight.reached("processing")
        private_redis.stop()
        for endpoint in chat:
            started = time.monotonic()
            refused = await client.post(endpoint, json={"query": "while down"})
            assert time.monotonic() - started < 2.5
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "unavailable"
            assert int(refused.headers["retry-after"]) >= 1
        health = await client.get(f"{servers[0].url}/api/v1/guest/health")
        assert health.status_code == 503
        assert health.json()["queue_backend"] == {"name": "redis", "reachable": False}
        status = (await client.get(f"{servers[0].url}/api/v1/guest/queue/status")).json()
        assert status["queue_reachable"] is False
        # The answer already being written finishes.
        assert (await in_flight.done())[-1] == "workflow_complete"
        private_redis.start()
        deadline = time.monotonic() + 15
        answers: list[int] = []
        while time.monotonic() < deadline:
            answers = [(await client.post(e, json={"query": "after"})).status_code for e in chat]
            if answers == [200, 200]:
                break
            await asyncio.sleep(0.25)
        assert answers == [200, 200]
        health = await client.get(f"{servers[1].url}/api/v1/guest/health")
        assert health.status_code == 200 and health.json()["queue_backend"]["reachable"]
    for server in servers:
        assert "Traceback" not in server.output()


async def test_chaos_across_processes_leaves_nothing_behind(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str, probe: redis.Redis
) -> None:
    """Guests on two processes leaving at random moments, failing and timing out."""
    servers = [
        start_server(**shared_env(redis_test_url, redis_test_prefix, **chaos.SETTINGS))
        for _ in range(2)
    ]
    refused = await chaos.run_guests([s.url for s in servers], seed=11)
    await asyncio.sleep(1.5)  # Past a renewal: every process has published its figures.
    async with httpx.AsyncClient(timeout=30) as client:
        status = (await client.get(f"{servers[0].url}/api/v1/guest/queue/status")).json()
    tag = "{" + redis_test_prefix + "}"
    assert probe.zcard(f"{tag}:waiting") == 0 and probe.scard(f"{tag}:active") == 0
    assert status["processes"] == 2
    chaos.assert_all_accounted_for(status, refused)
    logs = "\n".join(server.output() for server in servers)
    assert int(cast(str, probe.get(f"{tag}:probe:max_running"))) <= 3, logs
    assert probe.scard(f"{tag}:probe:running") == 0
