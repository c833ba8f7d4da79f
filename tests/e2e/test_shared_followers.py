"""Single flight across real uvicorn processes sharing a queue on the real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import httpx
import redis

from .conftest import Server, ServerFactory
from .test_shared_queue import shared_env


class Guest:
    """A plain ``POST chat`` (the seed's way: one ``data:`` line per message), timed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []

    async def ask(self, client: httpx.AsyncClient, server: Server, query: str) -> None:
        url = f"{server.url}/api/v1/guest/chat"
        async with client.stream("POST", url, json={"query": query}) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                    self.times.append(time.monotonic())

    def first(self, name: str) -> float:
        return next(t for t, e in zip(self.times, self.events, strict=True) if e["event"] == name)

    def text(self) -> str:
        return "".join(e["data"] for e in self.events if e["event"] == "answer_chunk")


async def test_a_follower_on_another_process_streams_the_answer_live(
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
    query = "chunks=8 delay=0.15"
    async with httpx.AsyncClient(timeout=30) as client:
        leader, follower = Guest(), Guest()
        asking = asyncio.ensure_future(leader.ask(client, servers[0], query))
        # Asked elsewhere once the leader has run a while (it is announced after 0.1 s).
        while [e["event"] for e in leader.events].count("answer_chunk") < 2:
            await asyncio.sleep(0.01)
        await asyncio.gather(asking, follower.ask(client, servers[1], query))
    answer = "".join(f"chunk{i} " for i in range(8))
    assert leader.text() == follower.text() == answer
    names = [e["event"] for e in follower.events]
    assert names[:2] == ["queued", "processing"] and names[-1] == "workflow_complete"
    # Live: its first chunk came while the leader's answer was still being produced.
    assert follower.first("answer_chunk") < leader.first("workflow_complete") - 0.3
    assert [e["seq"] for e in follower.events] == list(range(1, len(follower.events) + 1))
    assert {e["request_id"] for e in follower.events} != {leader.events[0]["request_id"]}
    # The workflow ran once, on the leader's process.
    key = "{" + redis_test_prefix + "}:probe"
    assert cast(list[str], probe.lrange(f"{key}:started", 0, -1)) == [query]
