"""The guest API inside a full site against a middleware-free Django app, in one run.

    python -m bench.site_compare [site-throughput] [site-latency] [site-limit3]
                                 [site-cached] [site-lane-off] [--clients 50]
                                 [--seconds 5] [--rounds 3]

Two uvicorn servers run side by side, each pinned to CPU 0 (the load generator
runs on the other CPUs): genestory (``genestory.asgi:application``, the lean
lane on, its eight site middleware classes for every other URL) and
``bench/bare_site.py`` (a single-file Django app, no middleware, a bare async
``StreamingHttpResponse`` of the same ten-chunk answer's events). Rounds
alternate between them so drift on the machine hits both alike.

- site-throughput: ``POST chat`` (lane on, history on, cache off, limit >= clients)
  vs the bare app at N keep-alive clients.            target >= 0.85x
- site-latency: the same at 1 client; added p50.       target <= 0.3 ms
- site-limit3: ``POST chat`` at the seed's default limit (3) with N clients vs the
  bare app (the figure bench/gradio_compare.py sets against Gradio's queue).
- site-cached: a cached answer (cache on) at N clients vs the bare app.  target >= 0.9x
- site-lane-off: ``POST chat`` through the site's whole middleware stack (the lane
  off, as before issue 15) vs the bare app, for the record.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import ExitStack

from bench.client import Result, percentile, run_load
from bench.server import BenchServer, pin_client, raise_fd_limit

CHAT = "/api/v1/guest/chat"
TEN_CHUNKS = "tests.scripted.TenChunksWorkflow"
BARE_APP = "bench.bare_site:application"
QUESTION = "What is DNA?"
SCENARIOS = ["site-throughput", "site-latency", "site-limit3", "site-cached", "site-lane-off"]


def stats(results: list[Result], seconds: float) -> dict[str, float]:
    latencies = [r.latency_ms for r in results]
    return {
        "rps": len(results) / seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def show(name: str, s: dict[str, float]) -> None:
    print(f"  {name:<8} {s['rps']:8.1f} req/s   p50 {s['p50']:7.3f} ms   p99 {s['p99']:7.3f} ms")


def duel(
    settings: dict[str, str],
    clients: int,
    seconds: float,
    rounds: int,
    *,
    app: str = "genestory.asgi:application",
) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """Run genestory (``app``) and the bare app in alternating rounds: (bare, site, ratios)."""
    with ExitStack() as stack:
        bare = stack.enter_context(BenchServer({}, app=BARE_APP, ready_path="/health"))
        site = stack.enter_context(BenchServer(settings, app=app))
        targets = {"bare": (bare.url, "/chat"), "site": (site.url, CHAT)}

        async def run() -> tuple[dict[str, list[Result]], list[float]]:
            collected: dict[str, list[Result]] = {"bare": [], "site": []}
            ratios = []
            for url, path in targets.values():  # warm-up (and the cached scenario's first answer)
                await run_load(url, path, QUESTION, 1, 0.5)
                await run_load(url, path, QUESTION, clients, 1.0)
            for _ in range(rounds):
                counts = {}
                for name, (url, path) in targets.items():
                    results = await run_load(url, path, QUESTION, clients, seconds)
                    collected[name] += results
                    counts[name] = len(results)
                ratios.append(counts["site"] / counts["bare"])
            return collected, ratios

        collected, ratios = asyncio.run(run())
    total = seconds * rounds
    return stats(collected["bare"], total), stats(collected["site"], total), ratios


def report(
    bare: dict[str, float], site: dict[str, float], ratios: list[float], target: str
) -> None:
    show("bare", bare)
    show("genestory", site)
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    ratio = site["rps"] / bare["rps"]
    print(f"  ratio genestory/bare req/s: {ratio:.3f}  ({target}; per round {per_round})")


def chat_settings(limit: int, *, cache: bool = False, queue: int = 50) -> dict[str, str]:
    return {
        "GUEST_WORKFLOW": TEN_CHUNKS,
        "GUEST_MAX_CONCURRENT_REQUESTS": str(limit),
        "GUEST_MAX_QUEUE_SIZE": str(max(queue, 50)),
        "GUEST_HISTORY_ENABLED": "true",
        "GUEST_CACHE_ENABLED": "true" if cache else "false",
    }


def site_throughput(clients: int, seconds: float, rounds: int) -> None:
    print(f"site-throughput: {clients} clients, lane on, history on, cache off")
    report(*duel(chat_settings(clients), clients, seconds, rounds), "target >= 0.85")


def site_latency(seconds: float, rounds: int) -> None:
    print("site-latency: 1 client, lane on, history on, cache off")
    bare, site, _ = duel(chat_settings(1), 1, seconds, rounds)
    show("bare", bare)
    show("genestory", site)
    print(f"  added p50 latency: {site['p50'] - bare['p50']:.3f} ms  (target <= 0.3 ms)")


def site_limit3(clients: int, seconds: float, rounds: int) -> None:
    print(f"site-limit3: {clients} clients, GUEST_MAX_CONCURRENT_REQUESTS=3, history on, cache off")
    report(*duel(chat_settings(3, queue=clients), clients, seconds, rounds), "for the record")


def site_cached(clients: int, seconds: float, rounds: int) -> None:
    print(f"site-cached: {clients} clients, one cached question, lane on, history on")
    settings = chat_settings(clients, cache=True)
    report(*duel(settings, clients, seconds, rounds), "target >= 0.9")


def site_lane_off(clients: int, seconds: float, rounds: int) -> None:
    print(f"site-lane-off: {clients} clients, the site's whole middleware stack, history on")
    bare, site, ratios = duel(
        chat_settings(clients), clients, seconds, rounds, app="bench.site_apps:lane_off"
    )
    report(bare, site, ratios, "for the record: what the lane saves")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS[:4])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    pin_client()
    for scenario in args.scenarios:
        if scenario == "site-throughput":
            site_throughput(args.clients, args.seconds, args.rounds)
        elif scenario == "site-latency":
            site_latency(args.seconds, args.rounds)
        elif scenario == "site-limit3":
            site_limit3(args.clients, args.seconds, args.rounds)
        elif scenario == "site-cached":
            site_cached(args.clients, args.seconds, args.rounds)
        elif scenario == "site-lane-off":
            site_lane_off(args.clients, args.seconds, args.rounds)
        else:
            parser.error(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")


if __name__ == "__main__":
    main()
