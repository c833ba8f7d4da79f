"""Adaptive concurrency against a simulated model server with a knee (issue 25).

    python -m bench.adaptive [--knees 2 6 16] [--guests 32] [--fixed-sec 15] [--auto-sec 40]

In process, on the core queue (no HTTP, no Django): the cost measured is the
controller's, not the server's. ``Knee`` answers like a batching model server:
0.1 s to the first chunk and 5 more chunks 0.04 s apart while at most ``knee``
answers run at once; past the knee every step takes ``(running / knee) ** 2``
times longer (the square: a server that thrashes, preempting and recomputing,
so that too many at once is worse than too few; with a merely linear slowdown
every limit past the knee ties on throughput and the sweep's "best" would be
noise). The knee is unknown to the queue. ``guests`` clients ask back to back
(closed loop), more than any limit tried.

For each knee: a sweep of fixed limits, then ``"auto"`` (floor 1, ceiling 24)
from a cold start, then ``"auto"`` again with the knee halved mid-run. Reported:

- throughput (answers/s) of auto's last 10 s vs. the best fixed limit's: target >= 0.9
- time to first chunk p90 (arrival to first chunk, as the guest sees it) vs. that
  best fixed limit's: target <= 1.2
- time to converge: from start until 5 s of answers reach 90 % of the best fixed
  throughput: target <= 30 s
- capacity halved at 30 s: time until 5 s of answers reach 90 % of the best fixed
  limit's at the halved knee: target <= 30 s

Durations are scaled down (an answer takes 0.3 s instead of a model's seconds);
the controller decides once a second on at least 5 answers, so against a real
model, whose answers are fewer per second, it moves more slowly.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from guest_queue.core.config import QueueConfig
from guest_queue.core.manager import QueueManager
from guest_queue.core.workflow import WorkflowItem, WorkflowRequest

FIRST_CHUNK_SEC = 0.1
CHUNK_SEC = 0.04
CHUNKS = 5
CEILING = 24
HALVE_AT_SEC = 30.0


class Knee:
    """A model server: each step slows by ``(running / knee) ** 2`` past ``knee`` at once."""

    def __init__(self, knee: float) -> None:
        self.knee = knee
        self.running = 0

    def factor(self) -> float:
        return max(1.0, self.running / self.knee) ** 2

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        self.running += 1
        try:
            await asyncio.sleep(FIRST_CHUNK_SEC * self.factor())
            yield "first "
            for _ in range(CHUNKS):
                await asyncio.sleep(CHUNK_SEC * self.factor())
                yield "more "
            yield {"event": "workflow_complete", "data": {"suggested_questions": []}}
        finally:
            self.running -= 1


@dataclass
class Run:
    """Each answer's end time and time to first chunk, and the limit over time."""

    started: float = field(default_factory=time.monotonic)
    done: list[tuple[float, float]] = field(default_factory=list)
    limits: list[tuple[float, int]] = field(default_factory=list)

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Answers per second and time-to-first-chunk p90 (s) of answers ending in [start, end)."""
        ttfc = [t for at, t in self.done if start <= at < end]
        if not ttfc:
            return 0.0, math.inf
        return len(ttfc) / (end - start), percentile(ttfc, 90)

    def reached(self, target: float, after: float, until: float) -> float | None:
        """Seconds from ``after`` until 5 s of answers first reach ``target`` answers/s."""
        t = after
        while t + 5 <= until:
            if self.window(t, t + 5)[0] >= target:
                return t - after
            t += 0.5
        return None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


async def guest(manager: QueueManager, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = time.monotonic()
        ticket = await manager.submit("q")
        first = None
        async for event in manager.events(ticket):
            if event is not None and event.name == "answer_chunk" and first is None:
                first = time.monotonic() - asked
        if first is not None:
            run.done.append((time.monotonic() - run.started, first))


async def drive(
    knee: float, guests: int, seconds: float, *, limit: int | None, halve_at: float | None = None
) -> Run:
    """``guests`` asking for ``seconds`` against a knee; a fixed ``limit``, or auto (None)."""
    upstream = Knee(knee)
    config = QueueConfig(
        max_concurrent=limit or CEILING,
        adaptive=limit is None,
        concurrency_floor=1,
        max_queue_size=10 * guests,
        max_per_client=0,
        position_update_interval_sec=0.05,
        shutdown_grace_sec=0,
    )
    manager = QueueManager(config, upstream)
    run = Run()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(guest(manager, run, stop)) for _ in range(guests)]
    while (elapsed := time.monotonic() - run.started) < seconds:
        if halve_at is not None and elapsed >= halve_at and upstream.knee == knee:
            upstream.knee = knee / 2
        run.limits.append((elapsed, manager.admission.max_active))
        await asyncio.sleep(0.5)
    stop.set()
    for task in tasks:
        task.cancel()  # answers far past the knee take long: the run is over
    await asyncio.gather(*tasks, return_exceptions=True)
    await manager.close()
    return run


def sweep_limits(knee: int) -> list[int]:
    chosen = {1, 2, 4, 8, 2 * knee, CEILING} | set(range(max(1, knee - 2), knee + 4))
    return sorted(limit for limit in chosen if limit <= CEILING)


async def best_fixed(
    knee: float, limits: list[int], guests: int, seconds: float
) -> tuple[int, float, float]:
    """The fixed limit with the most answers per second (its p90 too), after a warm-up
    (the first third of the run)."""
    results = []
    for limit in limits:
        run = await drive(knee, guests, seconds, limit=limit)
        rate, p90 = run.window(seconds / 3, seconds)
        results.append((rate, -p90, limit))
        print(f"    fixed {limit:2d}: {rate:6.1f} answers/s, ttfc p90 {p90 * 1000:6.0f} ms")
    rate, neg_p90, limit = max(results)
    return limit, rate, -neg_p90


def limits_seen(run: Run, start: float, end: float) -> str:
    seen = [limit for at, limit in run.limits if start <= at < end]
    if not seen:
        return "-"
    return f"{min(seen)}..{max(seen)} (median {statistics.median(seen):g})"


async def main(knees: list[int], guests: int, fixed_sec: float, auto_sec: float) -> None:
    print(
        f"adaptive: {guests} guests back to back; answers 0.1 s to first chunk + "
        f"{CHUNKS} x {CHUNK_SEC} s, slowing as (running/knee)^2 past the knee"
    )
    for knee in knees:
        print(f"knee {knee}: sweep of fixed limits ({fixed_sec:g} s each)")
        limit, best, best_p90 = await best_fixed(knee, sweep_limits(knee), guests, fixed_sec)
        print(f"  best fixed: {limit} ({best:.1f} answers/s, ttfc p90 {best_p90 * 1000:.0f} ms)")

        run = await drive(knee, guests, auto_sec, limit=None)
        rate, p90 = run.window(auto_sec - 10, auto_sec)
        converged = run.reached(0.9 * best, 0.0, auto_sec)
        print(
            f"  auto: {rate:.1f} answers/s = {rate / best:.2f}x best (target >= 0.9); "
            f"ttfc p90 {p90 * 1000:.0f} ms = {p90 / best_p90:.2f}x (target <= 1.2); "
            f"converged in {_sec(converged)} (target <= 30 s); "
            f"limit in the last 10 s {limits_seen(run, auto_sec - 10, auto_sec)}"
        )

        half = knee / 2
        near = sorted({max(1, math.floor(half) + d) for d in (-1, 0, 1, 2)})
        print(f"  knee halved to {half:g}: fixed limits {near}")
        h_limit, h_best, h_p90 = await best_fixed(half, near, guests, fixed_sec)
        total = HALVE_AT_SEC + 40
        run = await drive(knee, guests, total, limit=None, halve_at=HALVE_AT_SEC)
        rate, p90 = run.window(total - 10, total)
        recovered = run.reached(0.9 * h_best, HALVE_AT_SEC, total)
        print(
            f"  auto, knee halved at {HALVE_AT_SEC:g} s: recovered in {_sec(recovered)} "
            f"(target <= 30 s); last 10 s {rate:.1f} answers/s = {rate / h_best:.2f}x best fixed "
            f"({h_limit}); ttfc p90 {p90 / h_p90:.2f}x; "
            f"limit {limits_seen(run, total - 10, total)}"
        )


def _sec(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--knees", type=int, nargs="+", default=[2, 6, 16])
    parser.add_argument("--guests", type=int, default=32)
    parser.add_argument("--fixed-sec", type=float, default=15.0)
    parser.add_argument("--auto-sec", type=float, default=40.0)
    args = parser.parse_args()
    asyncio.run(main(args.knees, args.guests, args.fixed_sec, args.auto_sec))
