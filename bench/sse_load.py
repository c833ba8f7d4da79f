"""Benchmark of the queue endpoint against a bare streaming view, on a real uvicorn server.

    python -m bench.sse_load [throughput] [latency] [waiters] [--clients 50] [--waiters 10000]

Each scenario starts its own server, measures a baseline in the same run and
prints the ratio, so figures are comparable on a shared, noisy machine:

- throughput: N clients sending back to back; the queue endpoint (a workflow
  yielding 10 chunks without delay, limit >= clients) vs. a bare async
  StreamingHttpResponse of the same events.           target >= 0.9x
  (history off: its cost is the "history" scenario; "throughput-history" runs
  this comparison with it on)
- latency: one client; added p50 latency of the queue.  target <= 0.3 ms
- history: queue throughput with the request-history writer on vs. off
  (two servers, alternating rounds).                    target >= 0.9x
- cache: a cached question vs. unique (uncached) ones with a workflow taking
  1 s, both at N clients; and a cached question's first chunk at 1 client.
                                            targets >= 20x req/s, <= 5 ms
- waiters: W clients waiting behind a long workflow (limit 1): RSS per waiter
  and how fast all of them hear about a move.   target <= 32 KiB, <= 1 s
- flood: one client keeps 200 requests in flight against one slot; a normal
  guest's time to answer vs. without the flood (bench/flood.py).
                                          target <= (cap + 1) x 1.2
- redis-latency, redis-throughput: the shared queue on Redis
  (GUEST_BENCH_REDIS_URL, default redis://127.0.0.1:6379/14); see bench/redis_queue.py.
- resume-encode, resume-waiters, resume-latency: resumable answers (issue 14);
  see bench/resume.py.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from dataclasses import dataclass, field

from bench import redis_queue, resume
from bench.client import Connection, Result, percentile, run_load
from bench.flood import flood
from bench.server import BenchServer, pin_client, raise_fd_limit

QUEUE = "/api/v1/guest/chat"
BARE = "/api/v1/guest/bench/bare"
TEN_CHUNKS = "tests.scripted.TenChunksWorkflow"


def summary(results: list[Result], seconds: float) -> dict[str, float]:
    latencies = [r.latency_ms for r in results]
    first = [r.first_event_ms for r in results]
    return {
        "rps": len(results) / seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "ttfe50": percentile(first, 50),
    }


def show(name: str, s: dict[str, float]) -> None:
    print(
        f"  {name:<6} {s['rps']:8.1f} req/s   p50 {s['p50']:7.2f} ms   p99 {s['p99']:7.2f} ms"
        f"   first event p50 {s['ttfe50']:6.2f} ms"
    )


async def compare(
    server: BenchServer, clients: int, seconds: float, rounds: int
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Alternate queue and bare runs so drift on the machine hits both alike.

    Returns the summaries over all rounds and each round's queue/bare throughput ratio.
    Each summary also holds ``cpu_us``, the server's CPU time per request: on a busy
    machine it moves far less than throughput does.
    """
    url = server.url
    collected: dict[str, list[Result]] = {"bare": [], "queue": []}
    cpu = {"bare": 0.0, "queue": 0.0}
    ratios = []
    for path in (BARE, QUEUE):  # warm-up
        await run_load(url, path, "warm up", clients, 1.0)
    for _ in range(rounds):
        counts = {}
        for name, path in (("bare", BARE), ("queue", QUEUE)):
            before = server.cpu_seconds()
            results = await run_load(url, path, "What is DNA?", clients, seconds)
            cpu[name] += server.cpu_seconds() - before
            collected[name] += results
            counts[name] = len(results)
        ratios.append(counts["queue"] / counts["bare"])
    summaries = {}
    for name, res in collected.items():
        summaries[name] = summary(res, seconds * rounds)
        summaries[name]["cpu_us"] = cpu[name] / max(1, len(res)) * 1e6
    return summaries, ratios


def show_cpu(s: dict[str, dict[str, float]]) -> None:
    bare, queue = s["bare"]["cpu_us"], s["queue"]["cpu_us"]
    print(
        f"  server CPU per request: bare {bare:.0f} us, queue {queue:.0f} us"
        f" (+{queue - bare:.0f} us; bare/queue {bare / queue:.3f})"
    )


def throughput(clients: int, seconds: float, rounds: int, history: str = "false") -> None:
    """The queue against the bare view; history off unless asked (its cost is measured apart)."""
    print(
        f"throughput: {clients} clients, {rounds} x {seconds:g} s per endpoint, history {history}"
    )
    settings = {
        "GUEST_WORKFLOW": TEN_CHUNKS,
        "GUEST_MAX_CONCURRENT_REQUESTS": str(clients),
        "GUEST_HISTORY_ENABLED": history,
    }
    with BenchServer(settings) as server:
        s, ratios = asyncio.run(compare(server, clients, seconds, rounds))
    show("bare", s["bare"])
    show("queue", s["queue"])
    show_cpu(s)
    ratio = s["queue"]["rps"] / s["bare"]["rps"]
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  ratio queue/bare throughput: {ratio:.3f}  (target >= 0.9; per round {per_round})")


def latency(seconds: float, rounds: int) -> None:
    print(f"latency: 1 client, {rounds} x {seconds:g} s per endpoint")
    with BenchServer({"GUEST_WORKFLOW": TEN_CHUNKS, "GUEST_HISTORY_ENABLED": "false"}) as server:
        s, _ = asyncio.run(compare(server, 1, seconds, rounds))
    show("bare", s["bare"])
    show("queue", s["queue"])
    added = s["queue"]["p50"] - s["bare"]["p50"]
    print(f"  added p50 latency: {added:.3f} ms  (target <= 0.3 ms)")


POSITION = re.compile(rb'"queue_position":(\d+)')


@dataclass
class Waiter:
    conn: Connection
    updates: list[tuple[float, int]] = field(default_factory=list)
    processing_at: float | None = None
    task: asyncio.Task[None] | None = None
    error: str | None = None

    async def hold(self, query: str) -> None:
        try:
            await self._hold(query)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = repr(exc)

    async def _hold(self, query: str) -> None:
        await self.conn.open()
        assert self.conn.reader is not None and self.conn.writer is not None
        self.conn.writer.write(self.conn.request(QUEUE, query))
        while data := await self.conn.reader.read(65536):
            now = time.perf_counter()
            for match in POSITION.finditer(data):
                self.updates.append((now, int(match.group(1))))
            if b'"processing"' in data:
                self.processing_at = now


async def hold_waiters(server: BenchServer, count: int, job_sec: float) -> None:
    query = f"sleep={job_sec:g} chunks=1"
    base_rss = server.rss_kib()
    waiters = [Waiter(Connection(server.url)) for _ in range(count + 1)]
    started = time.perf_counter()
    for i in range(0, len(waiters), 200):
        batch = waiters[i : i + 200]
        for w in batch:
            w.task = asyncio.ensure_future(w.hold(query))
        # Let each batch get its first event before the next connects (listen backlog).
        while any(not w.updates and w.error is None for w in batch):
            await asyncio.sleep(0.01)
    errors = [w.error for w in waiters if w.error]
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, e.g. {errors[0]}")
    ramp = time.perf_counter() - started
    await asyncio.sleep(1.0)
    rss = server.rss_kib()
    print(f"  {count} waiters connected in {ramp:.1f} s")
    print(f"  server RSS {base_rss / 1024:.1f} MiB idle -> {rss / 1024:.1f} MiB holding them")
    per = (rss - base_rss) / count
    print(f"  RSS per waiting client: {per:.1f} KiB  (target <= 32 KiB)")
    print(f"  server threads: {server.threads()}")

    # Wait for the next admission, then see how fast every other waiter hears of it.
    before = {id(w): len(w.updates) for w in waiters}
    mark = time.perf_counter()
    admitted: list[Waiter] = []
    while not admitted:
        await asyncio.sleep(0.01)
        admitted = [w for w in waiters if w.processing_at and w.processing_at > mark]
    moved_at = admitted[0].processing_at
    assert moved_at is not None
    await asyncio.sleep(2.0)
    lags = []
    missing = 0
    for w in waiters:
        if w in admitted or w.processing_at:
            continue
        fresh = [t for t, _ in w.updates[before[id(w)] :] if t >= moved_at]
        if fresh:
            lags.append(fresh[0] - moved_at)
        else:
            missing += 1
    lags_ms = [x * 1000 for x in lags]
    within = sum(1 for x in lags if x <= 1.0)
    print(
        f"  after a move: {len(lags)} waiters updated, p50 {statistics.median(lags_ms):.0f} ms, "
        f"p99 {percentile(lags_ms, 99):.0f} ms, max {max(lags_ms):.0f} ms; "
        f"{within}/{len(lags) + missing} within 1 s  (target: all)"
    )
    for w in waiters:
        assert w.task is not None
        w.task.cancel()
        w.conn.close()
    await asyncio.gather(*(w.task for w in waiters if w.task), return_exceptions=True)


def waiters(count: int) -> None:
    print(f"waiters: {count} clients behind a long workflow, limit 1")
    settings = {
        "GUEST_WORKFLOW": "tests.scripted.ScriptedWorkflow",
        "GUEST_MAX_CONCURRENT_REQUESTS": "1",
        "GUEST_MAX_QUEUE_SIZE": str(count + 10),
        "GUEST_REQUEST_TIMEOUT_SEC": "600",
    }
    with BenchServer(settings) as server:
        # uvloop keeps the client's own cost of reading 10,000 sockets low.
        import uvloop

        uvloop.run(hold_waiters(server, count, job_sec=4))
        time.sleep(1)
        import json
        import urllib.request

        with urllib.request.urlopen(f"{server.url}/api/v1/guest/queue/status") as r:
            status = json.load(r)
        print(
            f"  after all disconnected: queue_size={status['queue_size']} "
            f"active={status['active_requests']} cancelled={status['cancelled_requests']}"
        )


def history(clients: int, seconds: float, rounds: int) -> None:
    """Queue throughput with the history writer on and off (two servers, alternating)."""
    print(f"history: {clients} clients, {rounds} x {seconds:g} s per server")
    base = {"GUEST_WORKFLOW": TEN_CHUNKS, "GUEST_MAX_CONCURRENT_REQUESTS": str(clients)}
    with (
        BenchServer({**base, "GUEST_HISTORY_ENABLED": "false"}) as off,
        BenchServer({**base, "GUEST_HISTORY_ENABLED": "true"}) as on,
    ):

        async def run() -> dict[str, list[Result]]:
            collected: dict[str, list[Result]] = {"off": [], "on": []}
            for server in (off, on):
                await run_load(server.url, QUEUE, "warm up", clients, 1.0)
            for _ in range(rounds):
                for name, server in (("off", off), ("on", on)):
                    collected[name] += await run_load(
                        server.url, QUEUE, "What is DNA?", clients, seconds
                    )
            return collected

        collected = asyncio.run(run())
        import json
        import urllib.request

        with urllib.request.urlopen(f"{on.url}/api/v1/guest/queue/status") as r:
            dropped = json.load(r)["history_dropped"]
    s = {name: summary(res, seconds * rounds) for name, res in collected.items()}
    show("off", s["off"])
    show("on", s["on"])
    ratio = s["on"]["rps"] / s["off"]["rps"]
    print(f"  ratio history on/off throughput: {ratio:.3f}  (target >= 0.9); dropped {dropped}")


def cache(clients: int, seconds: float) -> None:
    """A cached question against the uncached path, with a workflow that takes 1 s."""
    print(f"cache: {clients} clients, workflow of 1 s, {seconds:g} s per path")
    settings = {
        "GUEST_WORKFLOW": "tests.scripted.ScriptedWorkflow",
        "GUEST_MAX_CONCURRENT_REQUESTS": str(clients),
        "GUEST_CACHE_ENABLED": "true",
    }
    counter = iter(range(10**9))

    def unique() -> str:
        return f"sleep=1 chunks=10 question {next(counter)}"

    common = "sleep=1 chunks=10 a common question"
    with BenchServer(settings) as server:

        async def run() -> tuple[list[Result], list[Result]]:
            await run_load(server.url, QUEUE, common, 1, 1.5)  # answered once, now cached
            uncached = await run_load(server.url, QUEUE, unique, clients, seconds)
            cached = await run_load(server.url, QUEUE, common, clients, seconds)
            return uncached, cached

        uncached, cached = asyncio.run(run())
    for name, results in (("uncached", uncached), ("cached", cached)):
        chunk = [r.first_chunk_ms for r in results]
        print(
            f"  {name:<8} {len(results) / seconds:8.1f} req/s   first chunk p50 "
            f"{percentile(chunk, 50):8.2f} ms   p99 {percentile(chunk, 99):8.2f} ms"
        )
    ratio = len(cached) / max(1, len(uncached))
    print(f"  ratio cached/uncached throughput: {ratio:.1f}x  (target >= 20x)")

    async def single() -> list[Result]:
        return await run_load(server_url, QUEUE, common, 1, seconds)

    with BenchServer(settings) as server:
        server_url = server.url
        asyncio.run(run_load(server.url, QUEUE, common, 1, 1.5))
        alone = asyncio.run(single())
    chunk = [r.first_chunk_ms for r in alone]
    print(f"  cached, 1 client: first chunk p50 {percentile(chunk, 50):.2f} ms  (target <= 5 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=[
            "throughput",
            "latency",
            "history",
            "cache",
            "waiters",
            "redis-latency",
            "redis-throughput",
        ],
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waiters", type=int, default=10_000)
    parser.add_argument("--flood", type=int, default=200, help="the flooder's requests in flight")
    args = parser.parse_args()
    raise_fd_limit()
    pin_client()
    for scenario in args.scenarios:
        if scenario == "throughput":
            throughput(args.clients, args.seconds, args.rounds)
        elif scenario == "throughput-history":
            throughput(args.clients, args.seconds, args.rounds, history="true")
        elif scenario == "latency":
            latency(args.seconds, args.rounds)
        elif scenario == "cache":
            cache(args.clients, args.seconds)
        elif scenario == "history":
            history(args.clients, args.seconds, args.rounds)
        elif scenario == "waiters":
            waiters(args.waiters)
        elif scenario == "flood":
            flood(args.flood, args.seconds * 2, args.rounds - 1 or 1)
        elif scenario == "redis-latency":
            redis_queue.latency(args.seconds, args.rounds)
        elif scenario == "redis-throughput":
            redis_queue.throughput(args.clients, args.seconds)
        elif scenario == "resume-encode":
            resume.encode_cost()
        elif scenario == "resume-waiters":
            resume.waiters_memory(min(args.waiters, 2000))
        elif scenario == "resume-latency":
            resume.resume_latency()
        else:
            parser.error(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
