"""Two real uvicorn processes sharing one queue on Redis keep one order across tiers."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx
import redis

from .conftest import ServerFactory
from .test_servers import names, stream_events
from .test_shared_queue import shared_env


async def positions_reach(events: list[dict[str, Any]], wanted: list[int], timeout: float) -> None:
    """Wait until the stream's queued positions so far end with ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [e["data"]["queue_position"] for e in events if e["event"] == "queued"]
        if seen[-len(wanted) :] == wanted:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"positions {seen}, wanted them to end with {wanted}")


async def test_a_member_goes_ahead_of_guests_waiting_in_both_processes(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str, probe: redis.Redis
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_MAX_CONCURRENT_REQUESTS="1",
        GUEST_TIERS='{"member": 4, "guest": 1}',
        GUEST_PRIORITY="tests.scripted.tier_from_header",
    )
    one, two = start_server(**env), start_server(**env)
    async with httpx.AsyncClient(timeout=30) as client:
        streams: dict[str, list[dict[str, Any]]] = {}
        tasks = []

        async def ask(name: str, url: str, query: str, tier: str = "") -> None:
            streams[name] = []
            headers = {"X-Test-Tier": tier} if tier else None
            events = stream_events(client, url, query, streams[name], headers)
            tasks.append(asyncio.ensure_future(events))
            # Each guest is in line (its first event has come) before the next one asks.
            deadline = time.monotonic() + 10
            while not streams[name] and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        await ask("busy", one.url, "busy sleep=3 chunks=1")
        await ask("g1", one.url, "g1 chunks=1")
        await ask("g2", two.url, "g2 chunks=1")
        await ask("member", two.url, "member chunks=1", tier="member")
        first = next(e for e in streams["member"] if e["event"] == "queued")
        assert first["data"]["queue_position"] == 1
        # Both guests, one in each process, are told they moved back.
        await positions_reach(streams["g1"], [1, 2], 5)
        await positions_reach(streams["g2"], [2, 3], 5)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for events in streams.values():
        assert names(events)[-1] == "workflow_complete"
    key = "{" + redis_test_prefix + "}:probe"
    started = [q.split()[0] for q in cast(list[str], probe.lrange(f"{key}:started", 0, -1))]
    assert started == ["busy", "member", "g1", "g2"]
