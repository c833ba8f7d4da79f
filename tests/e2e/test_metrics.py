"""Metrics from two real uvicorn processes add up, whichever one answers the scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Server, ServerFactory
from .test_shared_queue import Guest, shared_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient, server: Server) -> Samples:
    response = await client.get(f"{server.url}/api/v1/guest/metrics")
    assert response.status_code == 200, response.text
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def requests(found: Samples, outcome: str, code: str = "") -> float:
    return found.get(("guest_queue_requests_total", (("code", code), ("outcome", outcome))), 0)


def gauge(found: Samples, name: str) -> float:
    return found.get((f"guest_queue_{name}", ()), -1)


async def eventually(
    client: httpx.AsyncClient, server: Server, ok: Callable[[Samples], bool]
) -> Samples:
    """Scrape until ``ok`` holds (gauges of other processes refresh every second)."""
    deadline = time.monotonic() + 10
    while True:
        found = await scrape(client, server)
        if ok(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def multiproc_env(tmp_path: Path, **env: str) -> dict[str, str]:
    directory = tmp_path / "prometheus"
    directory.mkdir(exist_ok=True)  # empty: a fresh directory for this deployment
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory), "GUEST_METRICS_ENABLED": "true", **env}


async def test_two_workers_sharing_a_multiprocess_directory_add_up(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    env = multiproc_env(tmp_path, GUEST_MAX_CONCURRENT_REQUESTS="1", GUEST_MAX_QUEUE_SIZE="0")
    servers = [start_server(**env), start_server(**env)]
    n = 6
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(n):
            response = await client.post(
                f"{servers[i % 2].url}/api/v1/guest/chat/simple", json={"query": f"q{i} chunks=2"}
            )
            assert response.status_code == 200, response.text
        for server in servers:
            found = await scrape(client, server)
            assert requests(found, "completed") == n
            for histogram in ("wait", "processing", "first_chunk"):
                assert found[(f"guest_queue_{histogram}_seconds_count", ())] == n
        # One answer running in the first worker, a refusal there: both show in either scrape.
        holder = Guest(client, servers[0], "sleep=2 chunks=1")
        await holder.reached("processing")
        refused = await client.post(f"{servers[0].url}/api/v1/guest/chat", json={"query": "x"})
        assert refused.status_code == 429
        for server in reversed(servers):
            found = await eventually(client, server, lambda f: gauge(f, "active") == 1)
            assert gauge(found, "active") == 1
            assert gauge(found, "waiting") == 0
            assert gauge(found, "slots") == 2  # each worker is its own queue of one slot
            assert requests(found, "rejected", "queue_full") == 1
        assert (await holder.done())[-1] == "workflow_complete"
        found = await scrape(client, servers[1])
        assert requests(found, "completed") == n + 1
        # A worker that stops leaves the gauges' sum; what it counted stays counted.
        servers[0].stop()
        found = await eventually(client, servers[1], lambda f: gauge(f, "slots") == 1)
        assert gauge(found, "slots") == 1
        assert requests(found, "completed") == n + 1


async def test_with_the_shared_queue_the_gauges_are_the_whole_queue(
    start_server: ServerFactory, tmp_path: Path, redis_test_url: str, redis_test_prefix: str
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        **multiproc_env(tmp_path, GUEST_MAX_CONCURRENT_REQUESTS="1", GUEST_MAX_QUEUE_SIZE="3"),
    )
    servers = [start_server(**env), start_server(**env)]
    async with httpx.AsyncClient(timeout=30) as client:
        guests = [Guest(client, servers[0], "a sleep=1.5 chunks=1")]
        await guests[0].reached("processing")
        guests.append(Guest(client, servers[1], "b sleep=0 chunks=1"))
        await guests[1].reached("queued")
        for server in servers:
            found: dict[Any, float] = await scrape(client, server)
            # The same figures from either process: one slot, one answering, one waiting.
            assert (gauge(found, "slots"), gauge(found, "active"), gauge(found, "waiting")) == (
                1,
                1,
                1,
            )
        for guest in guests:
            assert (await guest.done())[-1] == "workflow_complete"
        for server in servers:
            assert requests(await scrape(client, server), "completed") == 2
