"""Queue throughput of this checkout against the previous layout (issue 12), in one run.

    python -m bench.layout_compare [--old /work/wt/oldlayout] [--new CHECKOUT] [--clients 50]

Starts uvicorn servers side by side, each pinned to CPU 0 (the load generator
runs on CPU 1), all on this checkout's interpreter:

- old: the checkout before the package restructure (commit 793220d), served
  from its own directory (cwd and PYTHONPATH), so its ``guest_queue`` and
  ``genestory`` are imported from there, not from this checkout's editable
  install. Its throughput configuration, as its bench/sse_load.py ran it:
  ``guest_queue.workflows.testing.TenChunksWorkflow`` (ten chunks, no delay),
  limit = clients, cache off, history off, genestory's eight middleware.
- new: this checkout with the same workflow and settings, and the guest API
  lane given the same eight middleware (``GUEST_API_MIDDLEWARE``): the same
  request path, so the figure compares the queue's code.
- new-lean: this checkout as it ships (the lean lane's default middleware).
- old-2: a second server of the old checkout, identical to old: the old-2/old
  ratio is the noise of this run (an A/A control).

``--new`` serves "new" from another checkout of the new layout (for example
the commit that ended the layout steps, to measure the restructure alone;
new-lean is then left out, as is the /health/live check, specific to this one).

Rounds alternate between the servers (each round starting with the next one)
so drift on the machine hits all alike;
each prints req/s and p50 over all rounds, and the ratio to old (overall and
per round). Which ``guest_queue`` each server imported is checked before any
load: the module path (same interpreter, environment and working directory)
and a route only that code serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench.client import Result, percentile, run_load
from bench.server import ROOT, BenchServer, pin_client, raise_fd_limit

QUEUE = "/api/v1/guest/chat"
OLD_ROOT = Path("/work/wt/oldlayout")
#: genestory's MIDDLEWARE at 793220d: what every request of the old server ran through.
OLD_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


def common(clients: int, root: Path) -> dict[str, str]:
    return {
        "GUEST_MAX_CONCURRENT_REQUESTS": str(clients),
        "GUEST_HISTORY_ENABLED": "false",
        "GUEST_CACHE_ENABLED": "false",
        # This checkout's editable install must not shadow the checkout served.
        "PYTHONPATH": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def old_settings(clients: int, root: Path) -> dict[str, str]:
    return {
        **common(clients, root),
        "DJANGO_SETTINGS_MODULE": "genestory.settings",
        # As the old bench/server.py set it: mounts guest_queue/bench_views.py.
        "GUEST_BENCHMARK_VIEWS": "true",
        "GUEST_WORKFLOW": "guest_queue.workflows.testing.TenChunksWorkflow",
    }


def new_settings(clients: int, root: Path, *, lean: bool) -> dict[str, str]:
    settings = {**common(clients, root), "GUEST_WORKFLOW": "tests.scripted.TenChunksWorkflow"}
    if not lean:
        settings["GUEST_API_MIDDLEWARE"] = json.dumps(OLD_MIDDLEWARE)
    return settings


def imported_from(server: BenchServer) -> tuple[Path, Path]:
    """Where ``guest_queue`` and ``genestory`` resolve with the server's interpreter and env."""
    code = "import guest_queue, genestory; print(guest_queue.__file__); print(genestory.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=server.root,
        env=server.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return Path(out[0]).resolve(), Path(out[1]).resolve()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def verify(name: str, server: BenchServer, *, old: bool, routes: bool) -> None:
    """Fail unless the server runs the expected checkout's code."""
    cwd = Path(os.readlink(f"/proc/{server.process.pid}/cwd")).resolve()
    gq, gs = imported_from(server)
    root = server.root.resolve()
    print(f"  {name:<8} pid {server.process.pid} cwd {cwd}: guest_queue from {gq}, genestory {gs}")
    assert cwd == root, f"{name}: server runs in {cwd}, not {root}"
    assert gq.is_relative_to(root) and gs.is_relative_to(root), f"{name}: wrong checkout imported"
    if not routes:
        return
    # A route only one of the two codes serves: /health/live is new (the old catch-all says 404).
    live = status_of(f"{server.url}/api/v1/guest/health/live")
    assert live == (404 if old else 200), f"{name}: /health/live answered {live}"


def show(name: str, results: list[Result], seconds: float, base: float | None) -> float:
    rps = len(results) / seconds
    p50 = percentile([r.latency_ms for r in results], 50)
    ratio = f"   ratio to old {rps / base:.3f}" if base else ""
    print(f"  {name:<8} {rps:8.1f} req/s   p50 {p50:7.2f} ms{ratio}")
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--old", type=Path, default=OLD_ROOT, help="the previous layout's checkout")
    parser.add_argument("--new", type=Path, default=ROOT, help="the new layout's checkout")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    pin_client()
    old_head = subprocess.run(
        ["git", "-C", str(args.old), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"layout: {args.clients} clients, {args.rounds} x {args.seconds:g} s per server, "
        f"alternating; old = {args.old} ({old_head or '?'})"
    )
    this = args.new.resolve() == ROOT.resolve()
    print(f"  new = {args.new}")
    with ExitStack() as stack:
        configs = {
            "old": (old_settings(args.clients, args.old), args.old),
            "new": (new_settings(args.clients, args.new, lean=False), args.new),
        }
        if this:
            configs["new-lean"] = (new_settings(args.clients, ROOT, lean=True), ROOT)
        configs["old-2"] = configs["old"]
        servers: dict[str, BenchServer] = {}
        for name, (settings, root) in configs.items():
            # Entered as soon as started: a later failure still stops the earlier servers.
            servers[name] = stack.enter_context(BenchServer(settings, root=root))
            verify(name, servers[name], old=name.startswith("old"), routes=this)

        async def run() -> tuple[dict[str, list[Result]], list[dict[str, int]]]:
            collected: dict[str, list[Result]] = {name: [] for name in servers}
            rounds: list[dict[str, int]] = []
            for server in servers.values():  # warm-up
                await run_load(server.url, QUEUE, "warm up", args.clients, 1.0)
            order = list(servers.items())
            for i in range(args.rounds):
                counts = {}
                # Each round starts with the next server: no one always runs first or last.
                for name, server in order[i % len(order) :] + order[: i % len(order)]:
                    results = await run_load(
                        server.url, QUEUE, "What is DNA?", args.clients, args.seconds
                    )
                    collected[name] += results
                    counts[name] = len(results)
                rounds.append(counts)
            return collected, rounds

        collected, rounds = asyncio.run(run())
    total = args.seconds * args.rounds
    base = show("old", collected["old"], total, None)
    others = [name for name in servers if name != "old"]
    for name in others:
        show(name, collected[name], total, base)
    for name in others:
        per_round = ", ".join(f"{r[name] / r['old']:.2f}" for r in rounds)
        print(f"  {name}/old per round: {per_round}")


if __name__ == "__main__":
    main()
