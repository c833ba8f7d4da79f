"""Upstream back-pressure: guests in front of an upstream with a quota, with and without it.

    python -m bench.backpressure [--quota 10] [--window 1] [--guests 30] [--limit 16]
                                 [--seconds 20] [--concurrent] [--retry-after 1]

A real uvicorn server of the demo project runs ``OpenAIChatWorkflow`` against the
simulated quota upstream (``bench/upstreams.py``, in a subprocess): at most
``quota`` answers started per ``window`` seconds (``--concurrent``: at most ``quota``
at once), over it ``429`` with ``Retry-After``. The queue's fixed limit (``--limit``)
is set above what the quota allows, as an operator who guessed high would. ``guests``
clients ask back to back for ``seconds``. Two runs, each with a fresh upstream:

- without: today's behaviour, switched on in this bench by ``WithoutBackPressure``
  (the workflow maps the upstream's 429 to a plain ``WorkflowError``, as
  ``OpenAIChatWorkflow`` did before ``WorkflowBusy``): the guest gets an ``error``.
- with: ``OpenAIChatWorkflow`` as shipped: a 429 before the first chunk puts the guest
  back at the front of the line, and the queue admits less for the ``Retry-After``.

Printed for each: answers, guests who got an error for a 429 that arrived before their
first chunk (target with back-pressure: 0), other errors, and answers per second
(finished after the first 5 s and by the end) against the quota's rate (target >= 0.95
with back-pressure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bench.client import Result, percentile, run_load
from bench.server import BenchServer, free_port, pin_client, raise_fd_limit
from bench.upstreams import spawn_upstream
from guest_queue.workflows.base import WorkflowBusy, WorkflowError, WorkflowItem, WorkflowRequest
from guest_queue.workflows.openai import OpenAIChatWorkflow

CHAT = "/api/v1/guest/chat"
OPENAI = "guest_queue.workflows.openai.OpenAIChatWorkflow"
#: The start of a run not counted in its throughput (the first windows fill the line).
WARM_UP_SEC = 5.0


class WithoutBackPressure(OpenAIChatWorkflow):
    """Today's behaviour: an upstream 429 or 503 ends the guest's request with an error."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        try:
            async for item in super().stream(request):
                yield item
        except WorkflowBusy as exc:
            raise WorkflowError(exc.message) from None


@dataclass
class Outcome:
    answers: int = 0
    busy_errors: int = 0
    other_errors: int = 0
    requeued: int = 0


def events(result: Result) -> list[dict[str, object]]:
    found = []
    for line in result.body.split(b"\n"):
        if line.startswith(b"data: "):
            try:
                found.append(json.loads(line[6:]))
            except ValueError:
                continue
    return found


def classify(results: list[Result]) -> Outcome:
    outcome = Outcome()
    for result in results:
        seen = events(result)
        names = [e["event"] for e in seen]
        if "processing" in names and "queued" in names[names.index("processing") :]:
            outcome.requeued += 1  # Back in line after a processing: the upstream was busy.
        if names and names[-1] == "workflow_complete":
            outcome.answers += 1
            continue
        last = seen[-1] if seen else {}
        data = last.get("data") if isinstance(last, dict) else None
        message = str(data.get("error", "")) if isinstance(data, dict) else ""
        if "busy (429)" in message and "answer_chunk" not in names:
            outcome.busy_errors += 1
        else:
            outcome.other_errors += 1
    return outcome


def run(mode: str, args: argparse.Namespace) -> tuple[Outcome, int, dict[str, object]]:
    extra = ["--quota", str(args.quota), "--window", str(args.window)]
    if args.concurrent:
        extra += ["--concurrent", "--retry-after", str(args.retry_after)]
    upstream = spawn_upstream("quota", free_port(), *extra)
    workflow = OPENAI if mode == "with" else "bench.backpressure.WithoutBackPressure"
    settings = {
        "GUEST_WORKFLOW": workflow,
        "GUEST_WORKFLOW_OPTIONS": json.dumps(
            {"base_url": upstream.url, "model": "simulated", "read_timeout_sec": 30}
        ),
        "GUEST_MAX_CONCURRENT_REQUESTS": str(args.limit),
        "GUEST_MAX_QUEUE_SIZE": str(args.guests * 4),
        "GUEST_REQUEST_TIMEOUT_SEC": "30",
        "GUEST_HISTORY_ENABLED": "false",
    }
    try:
        with BenchServer(settings) as server:
            started = time.perf_counter()
            results = asyncio.run(run_load(server.url, CHAT, "Hello?", args.guests, args.seconds))
        stats = upstream.stats()
    finally:
        upstream.stop()
    outcome = classify(results)
    # Throughput in the steady part of the run: answers finished after the first
    # WARM_UP_SEC and by its end (those sent before it ends finish later: a tail).
    span = (started + WARM_UP_SEC, started + args.seconds)
    in_time = classify([r for r in results if span[0] < (r.finished or 0) <= span[1]])
    answered = [r.latency_ms for r in results if events(r)[-1:] and r.first_chunk is not None]
    print(
        f"  {mode:<7} answers {outcome.answers:5d}  errors for a 429 before the first chunk "
        f"{outcome.busy_errors:5d}  other errors {outcome.other_errors:3d}  "
        f"guests queued again {outcome.requeued:4d}"
    )
    print(
        f"          answer p50 {percentile(answered, 50):7.0f} ms  p90 "
        f"{percentile(answered, 90):7.0f} ms; upstream: {stats['completed']} answered, "
        f"{stats['refused']} refused (429), at most {stats['max_active']} at once"
    )
    return outcome, in_time.answers, stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quota", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--guests", type=int, default=30)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    raise_fd_limit()
    pin_client()
    kind = f"{args.quota} at once" if args.concurrent else f"{args.quota} per {args.window:g} s"
    print(
        f"back-pressure: quota {kind}, queue limit {args.limit}, {args.guests} guests "
        f"back to back for {args.seconds:g} s"
    )
    for mode in ("without", "with"):
        _outcome, in_time, _stats = run(mode, args)
        rate = in_time / (args.seconds - WARM_UP_SEC)
        if args.concurrent:
            print(f"          {rate:.2f} answers/s")
        else:
            quota_rate = args.quota / args.window
            print(
                f"          {rate:.2f} answers/s = {rate / quota_rate:.3f} of the quota's "
                f"{quota_rate:g}/s (target >= 0.95 with back-pressure)"
            )


if __name__ == "__main__":
    main()
