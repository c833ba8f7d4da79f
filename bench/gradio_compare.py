"""Optional: Gradio's queue against ``POST chat``, both at limit 3, with 50 clients.

    python -m bench.gradio_compare [--clients 50] [--seconds 10] [--rounds 2]

Gradio is never a dependency of this project: the script installs Gradio 6.x
into its own virtualenv under /tmp (``GRADIO_VENV``, default
/tmp/guest-gradio-venv) the first time, and skips with a message when that is
not possible (no network to PyPI, say). The Gradio app streams the same
ten-chunk answer from an async generator through its queue
(``default_concurrency_limit=3``); the load generator speaks Gradio's own
protocol (``POST /gradio_api/queue/join``, then the ``GET /gradio_api/queue/data``
event stream to ``close_stream``) on keep-alive connections. genestory runs
``POST /api/v1/guest/chat`` with ``GUEST_MAX_CONCURRENT_REQUESTS=3``, history
on, cache off. Both servers are pinned to CPU 0, the load generator to the rest,
and the rounds alternate.                             target: genestory >= 12x Gradio
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.client import Connection, run_load
from bench.server import (
    BenchServer,
    _pin_server,
    free_port,
    pin_client,
    process_cpu_seconds,
    raise_fd_limit,
)

VENV = Path(os.environ.get("GRADIO_VENV", "/tmp/guest-gradio-venv"))
GRADIO_REQUIREMENT = "gradio>=6,<7"
QUESTION = "What is DNA?"

GRADIO_APP = """
import sys

import gradio as gr


async def answer(question):
    text = ""
    for i in range(10):
        text += f"chunk {i} "
        yield text


with gr.Blocks() as demo:
    question = gr.Textbox()
    reply = gr.Textbox()
    question.submit(answer, question, reply, api_name="chat")

demo.queue(default_concurrency_limit=3, max_size=None)
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""


def gradio_python() -> Path | None:
    """The venv's Python with Gradio 6.x installed, or None when it cannot be had."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import gradio; assert gradio.__version__.startswith('6.')"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing {GRADIO_REQUIREMENT} into {VENV} (once) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", GRADIO_REQUIREMENT],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"gradio_compare: skipped, Gradio could not be installed ({exc})")
        return None
    return python if subprocess.run(check, capture_output=True).returncode == 0 else None


class GradioServer:
    """The Gradio app above, in its own process pinned to CPU 0."""

    def __init__(self, python: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="guest-gradio-")
        script = Path(self._dir.name) / "app.py"
        script.write_text(GRADIO_APP)
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.process = subprocess.Popen(
            [str(python), str(script), str(self.port)],
            env=env,
            cwd=self._dir.name,
            preexec_fn=_pin_server,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/gradio_api/info", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("the Gradio server did not start")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._dir.cleanup()


async def gradio_request(conn: Connection) -> None:
    """One question through Gradio's queue: join, then read its event stream to the end."""
    assert conn.reader is not None and conn.writer is not None
    session = uuid.uuid4().hex
    body = json.dumps(
        {"data": [QUESTION], "fn_index": 0, "session_hash": session, "event_data": None}
    ).encode()
    conn.writer.write(
        f"POST /gradio_api/queue/join HTTP/1.1\r\nHost: {conn.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await conn.reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"queue/join: {head[:100]!r}")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await conn.reader.readexactly(length)
    conn.writer.write(
        f"GET /gradio_api/queue/data?session_hash={session} HTTP/1.1\r\n"
        f"Host: {conn.host}\r\n\r\n".encode()
    )
    await conn.reader.readuntil(b"\r\n\r\n")
    buffer = b""
    while not (b"close_stream" in buffer and buffer.endswith(b"0\r\n\r\n")):
        data = await conn.reader.read(65536)
        if not data:
            raise ConnectionError("Gradio closed the stream")
        buffer += data
    if b"process_completed" not in buffer or b'"success":true' not in buffer.replace(b" ", b""):
        raise RuntimeError(f"Gradio request failed: {buffer[-300:]!r}")


async def gradio_load(url: str, clients: int, duration: float) -> int:
    done = 0
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        nonlocal done
        conn = Connection(url)
        await conn.open()
        try:
            while time.perf_counter() < stop_at:
                await gradio_request(conn)
                done += 1
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    python = gradio_python()
    if python is None:
        return
    raise_fd_limit()
    pin_client()
    version = subprocess.run(
        [str(python), "-c", "import gradio; print(gradio.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"gradio_compare: {args.clients} clients, limit 3, Gradio {version}")
    settings = {
        "GUEST_WORKFLOW": "tests.scripted.TenChunksWorkflow",
        "GUEST_MAX_CONCURRENT_REQUESTS": "3",
        "GUEST_MAX_QUEUE_SIZE": str(max(50, args.clients)),
        "GUEST_HISTORY_ENABLED": "true",
    }
    gradio = GradioServer(python)
    try:
        with BenchServer(settings) as site:

            async def run() -> tuple[int, int]:
                await gradio_load(gradio.url, args.clients, 1.0)  # warm-up
                await run_load(site.url, "/api/v1/guest/chat", QUESTION, args.clients, 1.0)
                counts = [0, 0]
                for _ in range(args.rounds):
                    before = process_cpu_seconds(gradio.process.pid)
                    counts[0] += await gradio_load(gradio.url, args.clients, args.seconds)
                    cpu[0] += process_cpu_seconds(gradio.process.pid) - before
                    before = site.cpu_seconds()
                    results = await run_load(
                        site.url, "/api/v1/guest/chat", QUESTION, args.clients, args.seconds
                    )
                    cpu[1] += site.cpu_seconds() - before
                    counts[1] += len(results)
                return counts[0], counts[1]

            cpu = [0.0, 0.0]
            gradio_done, site_done = asyncio.run(run())
    finally:
        gradio.close()
    total = args.seconds * args.rounds
    gradio_rps, site_rps = gradio_done / total, site_done / total
    # Server CPU per request: on a busy machine it moves far less than req/s do.
    gradio_us, site_us = cpu[0] / max(1, gradio_done) * 1e6, cpu[1] / max(1, site_done) * 1e6
    print(f"  Gradio queue    {gradio_rps:8.1f} req/s   server CPU {gradio_us:8.0f} us/request")
    print(f"  POST chat       {site_rps:8.1f} req/s   server CPU {site_us:8.0f} us/request")
    print(
        f"  ratio POST chat / Gradio: {site_rps / gradio_rps:.1f}x  (target >= 12x);"
        f" CPU per request Gradio / POST chat: {gradio_us / site_us:.1f}x"
    )


if __name__ == "__main__":
    main()
