"""Who is served first: tiers and fairness by cost, measured on the queue itself.

    python -m bench.admission [tiers] [fair] [cost] [--backend local|redis] [--seconds 20]

The queue manager is driven directly (no HTTP: the policy is what is measured;
``bench.sse_load throughput`` measures what it costs per request), with a
workflow that sleeps for the answer's time. Times are scaled down tenfold from
the issue's so a run takes a minute: answers of 0.2 s (tiers), 1 s and 0.1 s
(fair) for 2 s, 10 s and 1 s.

- tiers: guests arrive (Poisson) at 1.5x what the slots can answer, members at
  10 % of the slots' capacity, weights member 4 : guest 1. Targets: member wait
  p50 <= one average answer time; guests still answered at >= 80 % of the slots'
  capacity. The same load with one tier (FIFO) runs first, for comparison.
- fair: one client asks 1 s questions back to back, five others 0.1 s ones, one
  slot; fifo then fair. Targets: the light clients' wait p50 >= 3x better with
  fair; throughput (slot seconds used per second) within 5 %.

- cost: what ordering adds to one request's admission with 1,000 waiting
  (join the line, then the slot given back admits the head): the local line
  with the defaults vs two tiers and fair (target: <= 0.2 ms added at p50),
  and with ``--backend redis`` the round trip of the script that lines a
  request up (target: <= 1 ms added).

``--backend redis`` runs the same on the shared queue (GUEST_BENCH_REDIS_URL,
default redis://127.0.0.1:6379/14; a key prefix of the run's own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from guest_queue.core.config import QueueConfig
from guest_queue.core.errors import Refused
from guest_queue.core.manager import QueueManager
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

DEFAULT_URL = "redis://127.0.0.1:6379/14"


class SleepWorkflow:
    """Answers after the seconds its question names (``"sleep 0.2"``)."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        await asyncio.sleep(float(request.query.split()[1]))
        yield "done"


@dataclass
class Tally:
    """Waits (seconds) and answers by kind of guest."""

    waits: dict[str, list[float]] = field(default_factory=dict)
    busy_sec: float = 0.0
    refused: int = 0
    #: Answers by kind, finished within the run's own time.
    answered: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    def add(self, kind: str, wait_sec: float, processing_sec: float, seconds: float) -> None:
        self.waits.setdefault(kind, []).append(wait_sec)
        self.busy_sec += processing_sec
        if time.monotonic() - self.started <= seconds:
            self.answered[kind] = self.answered.get(kind, 0) + 1


def p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


@contextlib.contextmanager
def backend_options(backend: str) -> Iterator[dict[str, Any]]:
    if backend == "local":
        yield {}
        return
    import redis

    url, prefix = (
        os.environ.get("GUEST_BENCH_REDIS_URL", DEFAULT_URL),
        f"bench-{uuid.uuid4().hex[:8]}",
    )
    yield {"backend": "redis", "backend_options": {"url": url, "prefix": prefix}}
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def ask(
    manager: QueueManager, kind: str, seconds: float, tally: Tally, run_sec: float, **submit: Any
) -> None:
    """One question, to its end; its wait and answer time go to the tally."""
    try:
        ticket = await manager.submit(f"{kind} {seconds}", **submit)
    except Refused:
        tally.refused += 1
        return
    async for _ in manager.events(ticket):
        pass
    record = ticket.record
    if record.wait_ms is not None and record.processing_ms is not None:
        tally.add(kind, record.wait_ms / 1000, record.processing_ms / 1000, run_sec)


async def run_tiers(backend: str, tiers: dict[str, float], seconds: float) -> Tally:
    answer, slots = 0.2, 2
    capacity = slots / answer
    with backend_options(backend) as options:
        config = QueueConfig(
            max_concurrent=slots, max_queue_size=30, max_per_client=0, tiers=tiers, **options
        )
        manager = QueueManager(config, SleepWorkflow())
        tally, tasks = Tally(), set()
        rng = random.Random(7)

        async def arrivals(kind: str, rate: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await asyncio.sleep(rng.expovariate(rate))
                tier = kind if kind in tiers else "guest"
                asking = ask(manager, kind, answer, tally, seconds, tier=tier)
                task = asyncio.ensure_future(asking)
                tasks.add(task)

        await asyncio.gather(arrivals("guest", 1.5 * capacity), arrivals("member", 0.1 * capacity))
        await asyncio.gather(*tasks)
        await manager.close()
    return tally


def report_tiers(backend: str, seconds: float) -> None:
    answer, capacity = 0.2, 2 / 0.2
    print(
        f"tiers ({backend}): guests at 1.5x capacity, members at 10 %, {seconds:g} s, "
        f"answers {answer} s, 2 slots"
    )
    for label, tiers in (
        ("one tier", {"guest": 1.0}),
        ("member 4 : guest 1", {"member": 4.0, "guest": 1.0}),
    ):
        tally = asyncio.run(run_tiers(backend, tiers, seconds))
        member, guest = p50(tally.waits.get("member", [])), p50(tally.waits.get("guest", []))
        share = tally.answered.get("guest", 0) / seconds / capacity
        print(
            f"  {label:20s} member wait p50 {member:6.3f} s  guest wait p50 {guest:6.3f} s  "
            f"guests answered {share:5.1%} of capacity  refused {tally.refused}"
        )
    print(f"  targets: member wait p50 <= {answer} s (one answer); guests >= 80 % of capacity")


async def run_fair(backend: str, fairness: str, seconds: float) -> Tally:
    with backend_options(backend) as options:
        config = QueueConfig(
            max_concurrent=1, max_queue_size=50, max_per_client=0, fairness=fairness, **options
        )
        manager = QueueManager(config, SleepWorkflow())
        tally = Tally()
        end = time.monotonic() + seconds

        async def client(name: str, kind: str, answer: float) -> None:
            while time.monotonic() < end:
                await ask(manager, kind, answer, tally, seconds, client_hint=name)

        clients = [client("heavy", "heavy", 1.0)]
        clients += [client(f"light{i}", "light", 0.1) for i in range(5)]
        await asyncio.gather(*clients)
        tally.elapsed = time.monotonic() - tally.started
        await manager.close()
    return tally


def report_fair(backend: str, seconds: float) -> None:
    print(
        f"fair ({backend}): 1 client of 1 s answers, 5 of 0.1 s, back to back, 1 slot, "
        f"{seconds:g} s"
    )
    results = {}
    for fairness in ("fifo", "fair"):
        tally = asyncio.run(run_fair(backend, fairness, seconds))
        results[fairness] = tally
        light, heavy = tally.waits.get("light", []), tally.waits.get("heavy", [])
        print(
            f"  {fairness}: light wait p50 {p50(light):6.3f} s ({len(light)} answers)  "
            f"heavy wait p50 {p50(heavy):6.3f} s ({len(heavy)})  "
            f"slot busy {tally.busy_sec / tally.elapsed:5.1%} of {tally.elapsed:.1f} s"
        )
    better = p50(results["fifo"].waits["light"]) / p50(results["fair"].waits["light"])
    fair, fifo = results["fair"], results["fifo"]
    throughput = (fair.busy_sec / fair.elapsed) / (fifo.busy_sec / fifo.elapsed)
    print(f"  ratio light wait p50 fifo/fair: {better:.1f}x  (target >= 3x)")
    print(f"  ratio throughput fair/fifo: {throughput:.3f}  (target 0.95-1.05)")


def local_costs(config: QueueConfig, count: int) -> list[float]:
    """Seconds per request for joining a line of ``count`` and being admitted from its head."""
    from guest_queue.core.backends.base import Ticket, ordering_of
    from guest_queue.core.backends.local import LocalAdmission
    from guest_queue.core.records import RequestRecord

    line = LocalAdmission(1, 10 * count, 0.25, ordering=ordering_of(config))
    tiers = list(config.tiers)

    def ticket(i: int) -> Ticket:
        record = RequestRecord(f"r{i}", "q", client_hint=f"c{i % 50}", tier=tiers[i % len(tiers)])
        return Ticket(record)

    line.join(ticket(-1))  # holds the slot
    for i in range(count):
        line.join(ticket(i))
    costs = []
    for i in range(count, 3 * count):
        new = ticket(i)
        start = time.perf_counter()
        line.join(new)
        line.leave(next(iter(line.active.values())))  # the head is admitted
        costs.append(time.perf_counter() - start)
    return costs


async def redis_costs(config: QueueConfig, count: int) -> list[float]:
    """Round trips of lining a request up in Redis behind ``count`` others."""
    from guest_queue.core.backends.base import Ticket
    from guest_queue.core.records import RequestRecord

    manager = QueueManager(config, SleepWorkflow())
    backend: Any = manager.admission
    tiers = list(config.tiers)
    costs = []
    for i in range(2 * count + 1):
        record = RequestRecord(f"r{i}", "q", client_hint=f"c{i % 50}", tier=tiers[i % len(tiers)])
        start = time.perf_counter()
        await backend.enter(Ticket(record))
        if i > count:
            costs.append(time.perf_counter() - start)
    await backend.close()
    return costs


def report_cost(backend: str) -> None:
    count = 1000
    plain = QueueConfig()
    ordered = QueueConfig(tiers={"member": 4, "guest": 1}, fairness="fair")
    print(f"cost: one request's admission with {count} waiting")
    results = {}
    for label, config in (("defaults", plain), ("two tiers + fair", ordered)):
        runs = [p50(local_costs(config, count)) for _ in range(5)]
        results[label] = min(runs)
        print(f"  local {label:17s} p50 {results[label] * 1e6:7.1f} µs (best of 5 runs)")
    added = (results["two tiers + fair"] - results["defaults"]) * 1000
    print(f"  local added p50: {added:.3f} ms  (target <= 0.2 ms)")
    if backend != "redis":
        return
    for label, config in (("defaults", plain), ("two tiers + fair", ordered)):
        with backend_options(backend) as options:
            config = QueueConfig(
                tiers=config.tiers,
                fairness=config.fairness,
                max_concurrent=1,
                max_queue_size=10 * count,
                max_per_client=0,
                **options,
            )
            results[label] = p50(asyncio.run(redis_costs(config, count)))
        print(f"  redis {label:17s} ENTER round trip p50 {results[label] * 1e6:7.1f} µs")
    added = (results["two tiers + fair"] - results["defaults"]) * 1000
    print(f"  redis added p50: {added:.3f} ms  (target <= 1 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", help="tiers, fair, cost (default: all)")
    parser.add_argument("--backend", choices=["local", "redis"], default="local")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    args.scenarios = args.scenarios or ["tiers", "fair", "cost"]
    if "tiers" in args.scenarios:
        report_tiers(args.backend, args.seconds)
    if "fair" in args.scenarios:
        report_fair(args.backend, args.seconds)
    if "cost" in args.scenarios:
        report_cost(args.backend)


if __name__ == "__main__":
    main()
