"""The guest API inside a full site against a middleware-free Django app, in one run.

    python -m bench.site_compare [site-throughput] [site-latency] [site-limit3]
                                 [site-cached] [site-lane-off] [site-mounted]
                                 [--clients 50] [--seconds 5] [--rounds 3]

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
- site-mounted: ``POST chat`` in a fresh ``django-admin startproject`` site mounted
  exactly by the README's steps (``tests/mounted_site.py``: startproject's middleware
  plus ``LocaleMiddleware``, two views of its own) vs genestory, at N clients (20 in
  ``make bench``), lane on, history on, cache off.  target: within 10 % (0.9x-1.1x)
  (issue 26: a site owner's mount gets the same lane as the demo project).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.client import Result, percentile, run_load
from bench.server import ROOT, BenchServer, pin_client, raise_fd_limit
from tests.mounted_site import append_settings, make_site, mount_steps

CHAT = "/api/v1/guest/chat"
TEN_CHUNKS = "tests.scripted.TenChunksWorkflow"
BARE_APP = "bench.bare_site:application"
QUESTION = "What is DNA?"
SCENARIOS = [
    "site-throughput", "site-latency", "site-limit3", "site-cached", "site-lane-off",
    "site-mounted",
]  # fmt: skip
#: What the benchmark adds to the mounted site's settings: its GUEST_* values from the
#: environment (as genestory reads them), production mode, and no INFO log line per
#: request (BenchServer runs genestory with LOG_LEVEL=WARNING too).
MOUNTED_BENCH_SETTINGS = """
import json as _json
import os as _os

for _name, _value in _os.environ.items():
    if _name.startswith("GUEST_"):
        try:
            globals()[_name] = _json.loads(_value)
        except ValueError:
            globals()[_name] = _value
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
LOGGING["loggers"]["guest_queue"]["level"] = "WARNING"
"""


def stats(results: list[Result], seconds: float) -> dict[str, float]:
    latencies = [r.latency_ms for r in results]
    return {
        "rps": len(results) / seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def show(name: str, s: dict[str, float]) -> None:
    print(f"  {name:<9} {s['rps']:8.1f} req/s   p50 {s['p50']:7.3f} ms   p99 {s['p99']:7.3f} ms")


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
        return alternate(targets, clients, seconds, rounds)


def alternate(
    targets: dict[str, tuple[str, str]],
    clients: int,
    seconds: float,
    rounds: int,
    servers: dict[str, BenchServer] | None = None,
) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """Load two servers ``{name: (url, path)}`` in alternating rounds.

    Returns the first's and the second's figures and, per round, second / first req/s.
    With ``servers`` (by the same names), the figures include ``cpu_us``: the server
    process's CPU time per request over the measured rounds.
    """
    (first, _), (second, _) = targets.items()
    cpu = dict.fromkeys(targets, 0.0)

    async def run() -> tuple[dict[str, list[Result]], list[float]]:
        collected: dict[str, list[Result]] = {name: [] for name in targets}
        ratios = []
        for url, path in targets.values():  # warm-up (and the cached scenario's first answer)
            await run_load(url, path, QUESTION, 1, 0.5)
            await run_load(url, path, QUESTION, clients, 1.0)
        for _ in range(rounds):
            counts = {}
            for name, (url, path) in targets.items():
                before = servers[name].cpu_seconds() if servers else 0.0
                results = await run_load(url, path, QUESTION, clients, seconds)
                if servers:
                    cpu[name] += servers[name].cpu_seconds() - before
                collected[name] += results
                counts[name] = len(results)
            ratios.append(counts[second] / counts[first])
        return collected, ratios

    collected, ratios = asyncio.run(run())
    total = seconds * rounds
    figures = {name: stats(collected[name], total) for name in targets}
    if servers:
        for name in targets:
            figures[name]["cpu_us"] = cpu[name] / max(len(collected[name]), 1) * 1e6
    return figures[first], figures[second], ratios


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


def mounted_site(tmp: Path) -> Path:
    """A fresh startproject site under ``tmp``, mounted by the README, with benchmark settings."""
    site = tmp / "site"
    steps = mount_steps((ROOT / "README.md").read_text())
    make_site(str(Path(sys.executable).parent / "django-admin"), site, steps)
    append_settings(site, MOUNTED_BENCH_SETTINGS)
    return site


def site_mounted(clients: int, seconds: float, rounds: int) -> None:
    print(f"site-mounted: {clients} clients, lane on, history on, cache off")
    settings = chat_settings(clients)
    with tempfile.TemporaryDirectory(prefix="guest-bench-site-") as tmp, ExitStack() as stack:
        site = mounted_site(Path(tmp))
        genestory = stack.enter_context(BenchServer(settings))
        # This checkout's guest_queue (and tests.scripted's workflow), in the site's own
        # working directory, under its own settings module.
        mounted_env = {**settings, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
        mounted_env["PYTHONPATH"] = str(ROOT)
        mounted = stack.enter_context(
            BenchServer(mounted_env, app="mysite.asgi:application", root=site, django_site=True)
        )
        targets = {"genestory": (genestory.url, CHAT), "mounted": (mounted.url, CHAT)}
        servers = {"genestory": genestory, "mounted": mounted}
        base, site_figures, ratios = alternate(targets, clients, seconds, rounds, servers)
    show("genestory", base)
    show("mounted", site_figures)
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    ratio = site_figures["rps"] / base["rps"]
    verdict = "within" if abs(ratio - 1) <= 0.1 else "NOT within"
    print(f"  ratio mounted/genestory req/s: {ratio:.3f}  ({verdict} 10 %; per round {per_round})")
    cpu_ratio = base["cpu_us"] / site_figures["cpu_us"]
    print(
        f"  server CPU per request: genestory {base['cpu_us']:.0f} µs, mounted "
        f"{site_figures['cpu_us']:.0f} µs (genestory/mounted {cpu_ratio:.3f})"
    )


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
        elif scenario == "site-mounted":
            site_mounted(args.clients, args.seconds, args.rounds)
        else:
            parser.error(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")


if __name__ == "__main__":
    main()
