"""Many guests against real servers: some leave at random moments, some fail or time out."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

#: Server settings under which the chaos queries fail, time out and queue up.
SETTINGS = {
    "GUEST_MAX_CONCURRENT_REQUESTS": "3",
    "GUEST_MAX_QUEUE_SIZE": "40",
    "GUEST_REQUEST_TIMEOUT_SEC": "0.5",
}
QUERIES = ["chunks=3 delay=0.02", "sleep=0.1 chunks=2", "fail=crash", "sleep=2", "chunks=1"]
ROUNDS, GUESTS = 4, 30


async def run_guests(urls: list[str], seed: int) -> int:
    """ROUNDS x GUESTS guests, each on a server picked at random; returns how many got 429."""
    rng = random.Random(seed)
    refused = 0

    async def guest(client: httpx.AsyncClient) -> None:
        nonlocal refused
        leave_after = rng.choice([None, 0, 1, 2, 3])
        url, body = rng.choice(urls), {"query": rng.choice(QUERIES)}
        async with client.stream("POST", f"{url}/api/v1/guest/chat", json=body) as r:
            if r.status_code == 429:
                refused += 1
                return
            assert r.status_code == 200
            seen = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if leave_after is not None and seen > leave_after:
                        return  # the guest closes the tab

    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(ROUNDS):
            await asyncio.gather(*(guest(client) for _ in range(GUESTS)))
    return refused


def assert_all_accounted_for(status: dict[str, Any], refused: int) -> None:
    """Nothing left waiting or processing; every guest counted once, by how it ended."""
    assert status["queue_size"] == 0 and status["active_requests"] == 0
    ended = sum(
        status[k]
        for k in ("completed_requests", "failed_requests", "timeout_requests", "cancelled_requests")
    )
    assert status["total_requests"] == ended == ROUNDS * GUESTS - refused
    assert status["rejected_requests"] == refused
    assert status["cancelled_requests"] > 0 and status["timeout_requests"] > 0
    assert status["failed_requests"] > 0 and status["completed_requests"] > 0
