"""The rate limit on two real uvicorn processes sharing Redis: one count, exact at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from .conftest import ServerFactory, client_at
from .test_fair_share import status
from .test_shared_queue import shared_env

CHAT = "/api/v1/guest/chat"
WINDOW_SEC = 30


@pytest.mark.parametrize("shared", ["queue", "cache"])
async def test_thirty_questions_at_once_across_two_processes_get_exactly_the_rate(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str, shared: str
) -> None:
    """``shared="queue"``: the processes share the queue, and the rate counts in its Redis;
    ``"cache"``: each has its own local queue, and they share a Redis cache."""
    # A key of the test's own: its client's counters are no other test's.
    env = {"GUEST_RATE_LIMIT": f"5/{WINDOW_SEC}s", "GUEST_HASH_KEY": uuid.uuid4().hex * 2}
    if shared == "queue":
        env = shared_env(redis_test_url, redis_test_prefix, **env)
    else:
        env["CACHE_URL"] = redis_test_url
    servers = [start_server(**env), start_server(**env)]
    # All thirty in one window, whatever the time now.
    into = time.time() % WINDOW_SEC
    if into > WINDOW_SEC - 8:
        await asyncio.sleep(WINDOW_SEC - into + 0.1)
    async with client_at("127.0.0.2") as http:
        responses = await asyncio.gather(
            *(
                http.post(f"{servers[i % 2].url}{CHAT}/simple", json={"query": f"q{i} chunks=1"})
                for i in range(30)
            )
        )
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 5, codes
    refused = [r for r in responses if r.status_code != 200]
    assert len(refused) == 25
    for response in refused:
        assert response.status_code == 429 and response.json()["code"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= WINDOW_SEC
    # Both processes refused some, and their refusals add up (a process's own figures are
    # under "process" on the shared queue).
    figures = [await status(server) for server in servers]
    rejected = [f.get("process", f)["rejected_rate_limited"] for f in figures]
    assert sum(rejected) == 25 and all(r > 0 for r in rejected)
    async with httpx.AsyncClient(timeout=10) as other:
        # Another address has a count of its own.
        response = await other.post(f"{servers[0].url}{CHAT}/simple", json={"query": "x chunks=1"})
        assert response.status_code == 200
