"""CPU time per request of an ASGI app driven in-process, without an HTTP server.

    python -m bench.cpu_cost [--requests 3000] [--concurrency 1] [--profile out.prof]

Throughput on a shared machine swings with the neighbours' load; the CPU a
request costs the process (``time.process_time``, every thread included)
hardly does. Each target runs in its own subprocess (they need different
Django settings): ``bare`` (bench/bare_site.py), ``site`` (genestory, the lean
lane on, history on, cache off), ``cached`` (the same, cache on, one cached
question), ``limit3`` (``site`` at the seed's default limit of 3), ``lane-off``
(genestory through its whole middleware stack); ``view`` and ``queue`` are
``sse_load throughput``'s pair in one server (``bench.settings``, history off):
the bench-only bare view and ``POST chat``.
The HTTP server's own cost is left out, so the ratios here are harsher than
through uvicorn; the differences in microseconds are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

TARGETS = ["bare", "site", "limit3", "cached", "lane-off", "view", "queue"]
#: Requests before the measurement.
WARMUP = 200
QUESTION = json.dumps({"query": "What is DNA?"}).encode()


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(QUESTION)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def request(app: Any, path: str) -> None:
    done = asyncio.Event()
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": QUESTION, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"HTTP {message['status']}")
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope(path), receive, send)


async def drive(app: Any, path: str, requests: int, concurrency: int) -> float:
    """CPU seconds per request over ``requests`` requests, ``concurrency`` at a time."""
    for _ in range(WARMUP):  # the cached target's first answer among them
        await request(app, path)
    # Start-up's garbage collected now: its full collection would fall in the measurement.
    gc.collect()
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await request(app, path)

    start = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - start) / requests


def load_target(target: str) -> tuple[Any, str]:
    if target == "bare":
        from bench import bare_site

        return bare_site.application, "/chat"
    tmp = tempfile.mkdtemp(prefix="guest-cpu-")
    pair = target in ("view", "queue")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings" if pair else "genestory.settings",
        DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
        DEBUG="false",
        SECRET_KEY="benchmark-only-" + "x" * 50,
        LOG_LEVEL="WARNING",
        GUEST_WORKFLOW="tests.scripted.TenChunksWorkflow",
        GUEST_MAX_CONCURRENT_REQUESTS="3" if target == "limit3" else "100",
        GUEST_MAX_QUEUE_SIZE="100",
        GUEST_MAX_REQUESTS_PER_CLIENT="0",
        GUEST_HISTORY_ENABLED="false" if pair else "true",
        GUEST_CACHE_ENABLED="true" if target == "cached" else "false",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    if target == "lane-off":
        from bench.site_apps import lane_off

        return lane_off, "/api/v1/guest/chat"
    from genestory.asgi import application

    if target == "view":
        return application, "/api/v1/guest/bench/bare"
    return application, "/api/v1/guest/chat"


def measure(target: str, requests: int, concurrency: int, profile: str | None) -> None:
    app, path = load_target(target)
    if profile:
        import cProfile

        with cProfile.Profile() as prof:
            per = asyncio.run(drive(app, path, requests, concurrency))
        prof.dump_stats(profile)
    else:
        per = asyncio.run(drive(app, path, requests, concurrency))
    print(json.dumps({"target": target, "cpu_us": per * 1e6}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("targets", nargs="*", default=TARGETS)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--profile", help="write a cProfile of the (single) target here")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        measure(args.targets[0], args.requests, args.concurrency, args.profile)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUEST_")}
    figures = {}
    for target in args.targets:
        cmd = [sys.executable, "-m", "bench.cpu_cost", target, "--in-process"]
        cmd += ["--requests", str(args.requests), "--concurrency", str(args.concurrency)]
        if args.profile:
            cmd += ["--profile", f"{args.profile}.{target}"]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        figures[target] = json.loads(out.strip().splitlines()[-1])["cpu_us"]
    bare = figures.get("bare")
    print(f"CPU per request, {args.requests} requests, {args.concurrency} at a time:")
    for target, us in figures.items():
        versus = f"   {us / bare:5.2f}x bare, +{us - bare:6.1f} us" if bare else ""
        print(f"  {target:<9} {us:8.1f} us{versus}")


if __name__ == "__main__":
    main()
