"""Single flight across processes (issue 14): what it adds to a question nobody else asks.

    python -m bench.relay_cost [--rounds 10] [--per-round 200]

In one process, a Redis-backed queue with the answer cache on (an in-memory
one) answers unique questions (every one a cache miss and a leader) with a
ten-chunk workflow, one at a time: the time from ``submit`` to the last event.
Rounds alternate between the relay on (as shipped: a look in the in-memory
list of questions other processes answer before queueing, a timer when the
workflow starts, cancelled when it ends before being announced) and the relay
off (single flight within the process only, as before). Prints the p50 of each
and the difference.                                       target <= 0.2 ms added p50
(A first version asked Redis: a ``GET`` before queueing added 0.30 ms, a ``SET
NX`` and a compare-and-delete pipelined in the background 0.57 ms more.)
(GUEST_BENCH_REDIS_URL, default redis://127.0.0.1:6379/14; keys removed after.)
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis

from bench.client import percentile
from bench.redis_queue import redis_url
from guest_queue.core.answers.cache import CachedAnswer
from guest_queue.core.config import QueueConfig
from guest_queue.core.manager import QueueManager
from tests.scripted import TenChunksWorkflow


class MemoryCache:
    def __init__(self) -> None:
        self.data: dict[str, CachedAnswer] = {}

    async def get(self, key: str) -> CachedAnswer | None:
        return self.data.get(key)

    async def set(self, key: str, answer: CachedAnswer) -> None:
        self.data[key] = answer


async def one(manager: QueueManager) -> float:
    started = time.perf_counter()
    ticket = await manager.submit(f"unique question {uuid.uuid4().hex}")
    async for _ in manager.events(ticket):
        pass
    return (time.perf_counter() - started) * 1000


async def measure(rounds: int, per_round: int, prefix: str) -> dict[str, list[float]]:
    options = {"url": redis_url(), "prefix": prefix, "lease_sec": 5.0}
    config = QueueConfig(
        backend="redis", backend_options=options, max_concurrent=4, shutdown_grace_sec=0
    )
    manager = QueueManager(config, TenChunksWorkflow(), cache=MemoryCache())
    relay = manager.relay
    assert relay is not None
    manager.start()
    times: dict[str, list[float]] = {"relay on": [], "relay off": []}
    try:
        for _ in range(50):  # warm up both paths
            await one(manager)
        for _ in range(rounds):
            for name in times:
                manager.relay = relay if name == "relay on" else None
                for _ in range(per_round):
                    times[name].append(await one(manager))
    finally:
        manager.relay = relay
        await manager.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        times = asyncio.run(measure(args.rounds, args.per_round, prefix))
    finally:
        client = redis.Redis.from_url(redis_url())
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    p50 = {name: percentile(values, 50) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name:<9} p50 {p50[name]:6.3f} ms   p99 {percentile(values, 99):6.3f} ms")
    added = p50["relay on"] - p50["relay off"]
    print(f"  added p50 of single flight across processes: {added:.3f} ms  (target <= 0.2 ms)")


if __name__ == "__main__":
    main()
