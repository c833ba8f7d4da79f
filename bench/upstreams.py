"""Simulated upstreams: real OpenAI-compatible streaming HTTP servers with a known capacity.

    python -m bench.upstreams knee --knee 6 --port 8101
    python -m bench.upstreams quota --quota 10 --window 1 --port 8102
    python -m bench.upstreams quota --quota 4 --concurrent --port 8103
    python -m bench.upstreams changing --knee 8 --halve-after 30 --port 8104

Each serves ``POST /v1/chat/completions`` (streaming, as ``OpenAIChatWorkflow`` asks),
``GET /v1/models`` and ``GET /stats`` (what it served, as JSON). The models:

- ``knee``: a model server that batches (vLLM, TGI): up to ``knee`` requests at once
  each answer at full speed; past it every answer slows in proportion (time to first
  chunk and each chunk's interval are multiplied by ``active / knee``, read afresh
  for each chunk). Throughput grows with concurrency up to the knee, then stays flat
  while every answer gets slower.
- ``quota``: a hosted API's quota: at most ``quota`` requests started per ``window``
  seconds (fixed windows), or, with ``--concurrent``, at most ``quota`` at once; a request
  over it is answered ``429`` with ``Retry-After`` (whole seconds, as HTTP has it) and
  OpenAI's ``retry-after-ms`` (until the window turns; ``--retry-after`` for the
  concurrent quota).
- ``changing``: a ``knee`` server whose knee halves ``halve_after`` seconds after it
  started (capacity lost mid-run: a replica went away).

From code: ``start_upstream("knee", knee=6)`` starts one in a thread of this process
and returns it (``.url`` is its OpenAI base URL, ``.stats()`` its figures, ``.stop()``);
``spawn_upstream(...)`` runs one as a subprocess (off this process's CPU budget).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

#: Each answer's shape at full speed: time to the first chunk, chunks, interval between.
TTFC_SEC = 0.1
CHUNKS = 20
INTERVAL_SEC = 0.02


@dataclass
class Figures:
    """What an upstream served so far."""

    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    completed: int = 0
    refused: int = 0
    active: int = 0
    max_active: int = 0
    #: Monotonic times at which answers completed (throughput over any span).
    completions: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "uptime_sec": round(time.monotonic() - self.started, 3),
            "requests": self.requests,
            "completed": self.completed,
            "refused": self.refused,
            "active": self.active,
            "max_active": self.max_active,
        }


class Model:
    """How an upstream answers: the knee model at an infinite knee (never slows)."""

    def __init__(
        self, ttfc: float = TTFC_SEC, chunks: int = CHUNKS, interval: float = INTERVAL_SEC
    ) -> None:
        self.ttfc = ttfc
        self.chunks = chunks
        self.interval = interval
        self.figures = Figures()

    def refusal(self) -> tuple[float, str] | None:
        """(seconds to wait, message) when this request is over the quota; None: served."""
        return None

    def slowdown(self) -> float:
        """How much slower than full speed an answer goes right now (1: full speed)."""
        return 1.0


class Knee(Model):
    """Full speed up to ``knee`` answers at once; past it each slows by ``active / knee``."""

    def __init__(self, knee: int, **shape: Any) -> None:
        super().__init__(**shape)
        self.knee = knee

    def current_knee(self) -> float:
        return float(self.knee)

    def slowdown(self) -> float:
        return max(1.0, self.figures.active / self.current_knee())


class Changing(Knee):
    """A knee server whose knee halves ``halve_after`` seconds after it started."""

    def __init__(self, knee: int, halve_after: float, **shape: Any) -> None:
        super().__init__(knee, **shape)
        self.halve_after = halve_after

    def current_knee(self) -> float:
        elapsed = time.monotonic() - self.figures.started
        return self.knee / 2 if elapsed >= self.halve_after else float(self.knee)


class Quota(Model):
    """At most ``quota`` requests per ``window`` seconds (or, ``concurrent``, at once)."""

    def __init__(
        self,
        quota: int,
        window: float = 1.0,
        *,
        concurrent: bool = False,
        retry_after: float = 1.0,
        **shape: Any,
    ) -> None:
        super().__init__(**shape)
        self.quota = quota
        self.window = window
        self.concurrent = concurrent
        self.retry_after = retry_after
        self._window_start = time.monotonic()
        self._in_window = 0

    def refusal(self) -> tuple[float, str] | None:
        if self.concurrent:
            if self.figures.active >= self.quota:
                return self.retry_after, f"Over the quota of {self.quota} requests at once."
            return None
        now = time.monotonic()
        turns = math.floor((now - self._window_start) / self.window)
        if turns > 0:
            self._window_start += turns * self.window
            self._in_window = 0
        if self._in_window >= self.quota:
            left = self._window_start + self.window - now
            return left, f"Over the quota of {self.quota} requests per {self.window:g} s."
        self._in_window += 1
        return None


def build_model(kind: str, **options: Any) -> Model:
    """The model named ``kind`` (``knee``, ``quota``, ``changing``) with its options."""
    kinds: dict[str, type[Model]] = {"knee": Knee, "quota": Quota, "changing": Changing}
    if kind not in kinds:
        raise ValueError(f"unknown upstream {kind!r}: one of {', '.join(kinds)}")
    return kinds[kind](**options)


class UpstreamServer:
    """An OpenAI-compatible HTTP/1.1 server (keep-alive, chunked SSE) in front of a model."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``GUEST_OPENAI_BASE_URL``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/v1/models":
                    await self._json(writer, 200, {"data": [{"id": "simulated"}]})
                elif method == "GET" and path == "/stats":
                    await self._json(writer, 200, self.model.figures.as_dict())
                elif method == "POST" and path == "/v1/chat/completions":
                    await self._complete(writer, json.loads(body or b"{}"))
                else:
                    await self._json(writer, 404, {"error": {"message": "not found"}})
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _complete(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        model, figures = self.model, self.model.figures
        figures.requests += 1
        if not body.get("stream"):
            text = "Simulated follow-up?"
            await self._json(writer, 200, {"choices": [{"message": {"content": text}}]})
            return
        refusal = model.refusal()
        if refusal is not None:
            wait, message = refusal
            figures.refused += 1
            headers = {
                "Retry-After": str(max(1, math.ceil(wait))),
                "retry-after-ms": str(max(1, round(wait * 1000))),
            }
            await self._json(writer, 429, {"error": {"message": message}}, headers)
            return
        figures.active += 1
        figures.max_active = max(figures.max_active, figures.active)
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            await asyncio.sleep(model.ttfc * model.slowdown())
            for i in range(model.chunks):
                if i:
                    await asyncio.sleep(model.interval * model.slowdown())
                await self._delta(writer, f"w{i} ")
            await self._delta(writer, "", finish="stop")
            await self._chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            figures.completed += 1
            figures.completions.append(time.monotonic())
        finally:
            figures.active -= 1

    async def _delta(
        self, writer: asyncio.StreamWriter, text: str, finish: str | None = None
    ) -> None:
        delta = {"content": text} if text else {}
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        await self._chunk(writer, f"data: {json.dumps(chunk)}\n\n".encode())

    async def _chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(head.encode() + b"\r\n" + data)
        await writer.drain()


class RunningUpstream:
    """An upstream served from a thread of this process (its own event loop)."""

    def __init__(self, model: Model, port: int = 0) -> None:
        self.model = model
        self.server = UpstreamServer(model)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.server.start(port))
                ready.set()
                self._loop.run_forever()
            finally:
                # Open connections' tasks are dropped with the loop: the upstream is gone.
                for task in asyncio.all_tasks(self._loop):
                    task.cancel()
                with contextlib.suppress(Exception):
                    self._loop.run_until_complete(asyncio.sleep(0))
                self._loop.close()

        self._thread = threading.Thread(target=run, name="simulated-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the simulated upstream did not start")

    @property
    def url(self) -> str:
        return self.server.url

    def stats(self) -> dict[str, Any]:
        return self.model.figures.as_dict()

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(2)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2)


def start_upstream(kind: str, *, port: int = 0, **options: Any) -> RunningUpstream:
    """Start the simulated upstream ``kind`` in this process; ``.url`` is its base URL."""
    return RunningUpstream(build_model(kind, **options), port)


class SpawnedUpstream:
    """An upstream run as a subprocess (``python -m bench.upstreams``)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def spawn_upstream(kind: str, port: int, *args: str) -> SpawnedUpstream:
    """Run ``python -m bench.upstreams kind --port port *args`` until it answers."""
    cmd = [sys.executable, "-m", "bench.upstreams", kind, "--port", str(port), *args]
    process = subprocess.Popen(cmd)
    upstream = SpawnedUpstream(process, port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            upstream.stats()
            return upstream
        except OSError:
            time.sleep(0.05)
    upstream.stop()
    raise RuntimeError(f"the simulated upstream {kind} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("kind", choices=["knee", "quota", "changing"])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--knee", type=int, default=6)
    parser.add_argument("--halve-after", type=float, default=30.0)
    parser.add_argument("--quota", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--concurrent", action="store_true", help="quota of requests at once")
    parser.add_argument("--retry-after", type=float, default=1.0, help="concurrent quota's")
    parser.add_argument("--ttfc", type=float, default=TTFC_SEC)
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    parser.add_argument("--interval", type=float, default=INTERVAL_SEC)
    a = parser.parse_args()
    shape = {"ttfc": a.ttfc, "chunks": a.chunks, "interval": a.interval}
    options: dict[str, Any] = {
        "knee": {"knee": a.knee},
        "changing": {"knee": a.knee, "halve_after": a.halve_after},
        "quota": {
            "quota": a.quota,
            "window": a.window,
            "concurrent": a.concurrent,
            "retry_after": a.retry_after,
        },
    }[a.kind]

    async def serve() -> None:
        server = UpstreamServer(build_model(a.kind, **options, **shape))
        await server.start(a.port)
        print(f"{a.kind} upstream at {server.url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
