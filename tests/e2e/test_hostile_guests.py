"""Hostile guests against two real uvicorn processes sharing a queue on the real Redis.

Each guest has an address of its own (127.0.0.2, 127.0.0.3, …), as on the internet.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import httpx
import redis

from .conftest import Server, ServerFactory, client_at
from .test_shared_queue import shared_env

CHAT = "/api/v1/guest/chat"


class Guest:
    """One ``POST chat`` read the seed's way: one ``data:`` line per message."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def ask(self, client: httpx.AsyncClient, server: Server, body: dict[str, Any]) -> None:
        async with client.stream("POST", server.url + CHAT, json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))

    @property
    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def text(self) -> str:
        return "".join(e["data"] for e in self.events if e["event"] == "answer_chunk")


async def until(predicate: Any, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def no_unhandled_errors(*servers: Server) -> None:
    for server in servers:
        output = server.output()
        assert "Task exception was never retrieved" not in output, output
        assert "Traceback" not in output, output


async def test_a_leader_leaving_or_cancelling_does_not_cut_the_others_answer(
    start_server: ServerFactory,
    redis_test_url: str,
    redis_test_prefix: str,
    probe: redis.Redis,
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_CACHE_ENABLED="true",
        GUEST_MAX_CONCURRENT_REQUESTS="2",
    )
    servers = [start_server(**env) for _ in range(2)]
    expected = "".join(f"chunk{i} " for i in range(10))
    # 1. The leader closes its connection while guests here and on the other process follow.
    query = "chunks=10 delay=0.1 closing"
    async with (
        client_at("127.0.0.2") as hostile,
        client_at("127.0.0.3") as near,
        client_at("127.0.0.4") as far,
    ):
        leader, here, there = Guest(), Guest(), Guest()
        leaving = asyncio.ensure_future(leader.ask(hostile, servers[0], {"query": query}))
        await until(lambda: leader.names.count("answer_chunk") >= 2)
        following = [
            asyncio.ensure_future(here.ask(near, servers[0], {"query": query})),
            asyncio.ensure_future(there.ask(far, servers[1], {"query": query})),
        ]
        await until(lambda: "answer_chunk" in here.names and "answer_chunk" in there.names)
        leaving.cancel()  # closes its connection
        await asyncio.gather(leaving, return_exceptions=True)
        await asyncio.gather(*following)
    for guest in (here, there):
        assert guest.names[-1] == "workflow_complete", guest.events
        assert guest.text() == expected
    # 2. A resumable leader cancels through the other process.
    query = "chunks=10 delay=0.1 cancelling"
    async with client_at("127.0.0.5") as hostile, client_at("127.0.0.6") as guest_client:
        leader, follower = Guest(), Guest()
        asking = asyncio.ensure_future(
            leader.ask(hostile, servers[0], {"query": query, "resumable": True})
        )
        await until(lambda: leader.names.count("answer_chunk") >= 2)
        reading = asyncio.ensure_future(follower.ask(guest_client, servers[1], {"query": query}))
        await until(lambda: "answer_chunk" in follower.names)
        leader_id = leader.events[0]["request_id"]
        cancel = await hostile.post(f"{servers[1].url}{CHAT}/{leader_id}/cancel")
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        await asyncio.wait_for(asking, 10)
        await reading
    assert leader.names[-1] == "error" and leader.events[-1]["data"]["code"] == "cancelled"
    assert follower.names[-1] == "workflow_complete", follower.events
    assert follower.text() == expected
    # Each answer ran once, and was cached for whoever asks next.
    started = cast(list[str], probe.lrange("{" + redis_test_prefix + "}:probe:started", 0, -1))
    assert sorted(started) == sorted(["chunks=10 delay=0.1 closing", query])
    async with client_at("127.0.0.7") as late:
        again = Guest()
        await again.ask(late, servers[0], {"query": query})
    assert again.events[-1]["data"]["cached"] is True
    no_unhandled_errors(*servers)


async def test_a_guest_asking_cached_questions_in_a_loop_keeps_few_logs_alive(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_CACHE_ENABLED="true",
        GUEST_MAX_REQUESTS_PER_CLIENT="3",
        GUEST_RESUME_GRACE_SEC="60",
    )
    servers = [start_server(**env) for _ in range(2)]
    body = {"query": "chunks=2 cached", "resumable": True}
    ids: list[str] = []
    async with client_at("127.0.0.8") as flooder:
        for i in range(24):
            guest = Guest()
            await guest.ask(flooder, servers[i % 2], body)
            assert guest.names[-1] == "workflow_complete"
            ids.append(guest.events[0]["request_id"])

        async def resumable(request_id: str) -> int:
            response = await flooder.get(f"{servers[0].url}{CHAT}/{request_id}/events?after=0")
            return response.status_code

        statuses = [await resumable(request_id) for request_id in ids]
    # Each process keeps the client's newest three finished logs; the rest are gone
    # already (410 on every process), not kept for the whole minute of grace.
    assert statuses[-6:].count(200) >= 3
    assert statuses[:12] == [410] * 12, statuses
    log_keys = [
        key
        for key in redis.Redis.from_url(redis_test_url).scan_iter(
            match="{" + redis_test_prefix + "}:log:*", count=1000
        )
        if b":log:answer:" not in key
    ]
    assert len(log_keys) <= 6, log_keys
    no_unhandled_errors(*servers)
