"""End to end against real servers: uvicorn (lifespan on) and daphne (lazy start)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx

from ..services import missing
from . import chaos
from .conftest import ROOT, ServerFactory

HERE = Path(__file__).resolve().parent


async def stream_events(
    client: httpx.AsyncClient,
    url: str,
    query: str,
    into: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """POST a question and collect its SSE events (appending to ``into`` as they come)."""
    events = into if into is not None else []
    body = {"query": query}
    async with client.stream("POST", f"{url}/api/v1/guest/chat", json=body, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


async def test_uvicorn_streams_an_answer_and_keeps_the_limit(start_server: ServerFactory) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="2", GUEST_MAX_QUEUE_SIZE="3")
    async with httpx.AsyncClient(timeout=30) as client:
        tasks = [
            asyncio.ensure_future(stream_events(client, server.url, "sleep=0.5 chunks=2"))
            for _ in range(5)
        ]
        await asyncio.sleep(0.2)
        status = (await client.get(f"{server.url}/api/v1/guest/queue/status")).json()
        assert status["active_requests"] == 2 and status["queue_size"] == 3
        refused = await client.post(f"{server.url}/api/v1/guest/chat", json={"query": "x"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        results = await asyncio.gather(*tasks)
    for events in results:
        assert names(events)[0] == "queued" and names(events)[-1] == "workflow_complete"
        assert names(events).count("processing") == 1
    waited = sorted(r[0]["data"]["queue_position"] for r in results)
    assert waited == [1, 1, 1, 2, 3]


#: SHA-256 of the ```javascript block of shared/seed/guest-request-queue.md, byte for byte.
SEED_SNIPPET_SHA256 = "f538decbae647d78f37c182d8b1c4d1b3bf07b6e08c6ecaa177c34a0af26de2e"


def seed_document() -> Path | None:
    """The seed document, when the checkout sits below a ``shared/`` folder that holds it."""
    for folder in ROOT.parents:
        candidate = folder / "shared" / "seed" / "guest-request-queue.md"
        if candidate.exists():
            return candidate
    return None


def test_the_snippet_the_tests_run_is_the_seeds_exactly() -> None:
    snippet = (HERE / "seed_client.js").read_bytes()
    # Always checked, against the pinned hash of the seed's snippet: no edit goes unnoticed.
    assert hashlib.sha256(snippet).hexdigest() == SEED_SNIPPET_SHA256
    seed = seed_document()
    if seed is not None:
        blocks = re.findall(r"```javascript\n(.*?)```", seed.read_text(), re.DOTALL)
        assert blocks == [snippet.decode()]


async def test_seed_frontend_snippet_runs_unchanged(start_server: ServerFactory) -> None:
    node = shutil.which("node")
    if node is None:
        missing("Node.js", "node is not installed: cannot run the seed's frontend snippet")
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")

    def run(question: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [node, str(HERE / "run_seed_client.mjs"), server.url, question],
            stdout=subprocess.PIPE,
            text=True,
        )

    first = run("sleep=0.5 chunks=2 suggest=3")
    await asyncio.sleep(0.3)
    second = run("chunks=3 suggest=2")
    logs = [json.loads(p.communicate(timeout=30)[0]) for p in (first, second)]
    second_log = logs[1]
    statuses = [e["status"] for e in second_log if "status" in e]
    assert statuses[0] == "Queued at position 1..."
    assert statuses[-1] == "Processing your request..."
    assert "".join(e["chunk"] for e in second_log if "chunk" in e) == "chunk0 chunk1 chunk2 "
    assert second_log[-1] == {"suggested": ["Follow-up 0?", "Follow-up 1?"]}
    assert not any("error" in e or "consoleError" in e for log in logs for e in log)


async def test_sigterm_drains_then_exits(start_server: ServerFactory) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1", GUEST_SHUTDOWN_GRACE_SEC="10")
    running: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        first = asyncio.ensure_future(
            stream_events(client, server.url, "chunks=10 delay=0.15", running)
        )
        while "processing" not in names(running):
            await asyncio.sleep(0.02)
        second = asyncio.ensure_future(stream_events(client, server.url, "chunks=1", waiting))
        while not waiting:
            await asyncio.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.gather(first, second)
    # The answer in flight completes; the waiting one is told the server is going away.
    assert names(running)[-1] == "workflow_complete"
    assert names(running).count("answer_chunk") == 10
    assert waiting[-1]["event"] == "error" and waiting[-1]["data"]["code"] == "shutting_down"
    code = server.process.wait(15)
    # uvicorn re-raises the SIGTERM it handled after a clean shutdown (exit status -15).
    assert code in (0, -signal.SIGTERM), server.output()
    assert "Waiting for application shutdown." in server.output()
    assert "Application shutdown complete." in server.output()
    # The history buffer was flushed before the process exited.
    with sqlite3.connect(server.db_path) as db:
        stored = dict(db.execute("SELECT status, error_code FROM guest_queue_guestrequest"))
    assert stored == {"completed": "", "cancelled": "shutting_down"}


async def test_daphne_without_lifespan_starts_the_queue_lazily(start_server: ServerFactory) -> None:
    server = start_server("daphne", GUEST_MAX_CONCURRENT_REQUESTS="1")
    slow: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        first = asyncio.ensure_future(stream_events(client, server.url, "sleep=0.5 chunks=2", slow))
        while "processing" not in names(slow):
            await asyncio.sleep(0.02)
        second = await stream_events(client, server.url, "chunks=2")
        await first
        status = (await client.get(f"{server.url}/api/v1/guest/queue/status")).json()
    # The second waited behind the first: the limit holds under daphne too.
    assert second[0]["data"]["queue_position"] == 1
    assert next(e for e in second if e["event"] == "processing")["data"]["waited_ms"] >= 200
    assert names(slow)[-1] == names(second)[-1] == "workflow_complete"
    assert status["completed_requests"] == 2 and status["active_requests"] == 0


async def test_disconnect_over_a_real_socket_frees_the_slot(start_server: ServerFactory) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream(
            "POST", f"{server.url}/api/v1/guest/chat", json={"query": "sleep=60"}
        ) as r:
            async for line in r.aiter_lines():
                if '"processing"' in line:
                    break
        # The connection is closed here; the next request must get the slot at once.
        events = await asyncio.wait_for(stream_events(client, server.url, "chunks=1"), 5)
        status = (await client.get(f"{server.url}/api/v1/guest/queue/status")).json()
    assert names(events)[-1] == "workflow_complete"
    assert status["cancelled_requests"] == 1 and status["active_requests"] == 0


async def test_chaos_leaves_no_slot_or_entry_behind(start_server: ServerFactory) -> None:
    """Many guests, some leaving at random moments, some failing or timing out."""
    server = start_server(**chaos.SETTINGS)
    refused = await chaos.run_guests([server.url], seed=7)
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=30) as client:
        status = (await client.get(f"{server.url}/api/v1/guest/queue/status")).json()
    chaos.assert_all_accounted_for(status, refused)
