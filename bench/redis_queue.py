"""The shared (Redis) queue against the in-process one, on real uvicorn servers.

- latency: one client, a workflow yielding 10 chunks at once; p50 of the redis
  backend minus p50 of the local one, servers side by side in the same run
  (alternating rounds).                                   target <= 2 ms
- throughput at N clients through the redis backend with 1 and with 2 server
  processes (separate servers, clients split evenly, as nginx's least_conn
  would), for
  * a fast workflow (10 chunks at once, limit N): what a second process adds
    (the local backend, run alongside, shows what the machine allows);
  * a workflow of 0.1 s limited to 10 at a time: the limit is global, so the
    second process must not raise throughput (with the local backend it would
    double, and so would the load on the workflow).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import redis

from bench.client import Result, percentile, run_load
from bench.server import BenchServer

QUEUE = "/api/v1/guest/chat"
TEN_CHUNKS = "tests.scripted.TenChunksWorkflow"
SCRIPTED = "tests.scripted.ScriptedWorkflow"
DEFAULT_URL = "redis://127.0.0.1:6379/14"


def redis_url() -> str:
    return os.environ.get("GUEST_BENCH_REDIS_URL", DEFAULT_URL)


@contextmanager
def shared_queue() -> Iterator[dict[str, str]]:
    """Settings for a queue of this run's own; its keys are removed afterwards."""
    url, prefix = redis_url(), f"bench-{uuid.uuid4().hex[:8]}"
    yield {
        "GUEST_QUEUE_BACKEND": "redis",
        "GUEST_QUEUE_REDIS_URL": url,
        "GUEST_QUEUE_REDIS_PREFIX": prefix,
    }
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def latency(seconds: float, rounds: int) -> None:
    print(f"redis latency: 1 client, {rounds} x {seconds:g} s per backend")
    common = {"GUEST_WORKFLOW": TEN_CHUNKS, "GUEST_HISTORY_ENABLED": "false"}
    with (
        shared_queue() as shared,
        BenchServer(common) as local,
        BenchServer({**common, **shared}) as remote,
    ):

        async def run() -> dict[str, list[Result]]:
            collected: dict[str, list[Result]] = {"local": [], "redis": []}
            for server in (local, remote):
                await run_load(server.url, QUEUE, "warm up", 1, 1.0)
            for _ in range(rounds):
                for name, server in (("local", local), ("redis", remote)):
                    collected[name] += await run_load(server.url, QUEUE, "DNA?", 1, seconds)
            return collected

        collected = asyncio.run(run())
    p50 = {}
    for name, results in collected.items():
        times = [r.latency_ms for r in results]
        p50[name] = percentile(times, 50)
        print(
            f"  {name:<6} {len(results) / (seconds * rounds):8.1f} req/s   p50 {p50[name]:6.2f} ms"
            f"   p99 {percentile(times, 99):6.2f} ms"
        )
    added = p50["redis"] - p50["local"]
    print(f"  added p50 latency of the redis backend: {added:.3f} ms  (target <= 2 ms)")


async def load(urls: list[str], query: str, clients: int, seconds: float) -> int:
    """``clients`` back-to-back clients split evenly over the servers; requests answered."""
    shares = [clients // len(urls) + (i < clients % len(urls)) for i in range(len(urls))]
    runs = await asyncio.gather(
        *(run_load(url, QUEUE, query, n, seconds) for url, n in zip(urls, shares, strict=True))
    )
    return sum(len(results) for results in runs)


def throughput(clients: int, seconds: float) -> None:
    print(f"redis throughput: {clients} clients split evenly over the processes, {seconds:g} s")
    cases = [
        ("fast", {"GUEST_WORKFLOW": TEN_CHUNKS, "GUEST_MAX_CONCURRENT_REQUESTS": str(clients)}),
        ("0.1 s, limit 10", {"GUEST_WORKFLOW": SCRIPTED, "GUEST_MAX_CONCURRENT_REQUESTS": "10"}),
    ]
    query = "sleep=0.1 chunks=10"
    for name, case in cases:
        settings = {**case, "GUEST_HISTORY_ENABLED": "false", "GUEST_MAX_QUEUE_SIZE": str(clients)}
        rates = {}
        for backend in ("redis", "local"):
            for processes in (1, 2):
                with shared_queue() as shared, ExitStack() as stack:
                    env = {**settings, **(shared if backend == "redis" else {})}
                    servers = [
                        stack.enter_context(BenchServer(env, pin=False)) for _ in range(processes)
                    ]
                    urls = [server.url for server in servers]
                    asyncio.run(load(urls, query, clients, 1.0))
                    rate = asyncio.run(load(urls, query, clients, seconds)) / seconds
                rates[backend, processes] = rate
                print(f"  {name:<16} {backend:<5} {processes} process(es): {rate:8.1f} req/s")
        for backend in ("redis", "local"):
            ratio = rates[backend, 2] / rates[backend, 1]
            print(f"  {name:<16} {backend}, 2 processes / 1 process: {ratio:.2f}")
