"""Resumable answers (issue 14): what ``seq`` costs, what a resumable waiter costs, how
fast a resume replays.

    python -m bench.sse_load resume-encode resume-waiters resume-latency

- resume-encode: the SSE encoding of a 10-chunk answer's 13 messages with ``seq``
  against the encoding without it (the code before issue 14, copied here), in
  this process; the plain POST path adds nothing else (a counter in the writer).
  The end-to-end figure is the ``latency`` scenario (the bare view encodes ``seq``
  too).                                                   target <= 0.2 ms added p50
- resume-waiters: RSS per waiting client, W plain waiters on one server against W
  resumable ones on another (same settings).             target <= 1.2x
- resume-latency: a resumable request waits behind a long one; a client re-attaches
  (``GET chat/<id>/events?after=0``) again and again; time from sending the GET to
  the first replayed message. Local queue, and Redis (the GET on the process that
  drives it, and on another one, which reads the log from Redis).
                                            targets: p50 <= 5 ms local, <= 10 ms Redis
"""

from __future__ import annotations

import asyncio
import json
import timeit
import uuid
from urllib.parse import urlsplit

from bench.client import percentile
from bench.redis_queue import shared_queue
from bench.server import BenchServer
from guest_queue.core import events as ev

QUEUE = "/api/v1/guest/chat"
SCRIPTED = "tests.scripted.ScriptedWorkflow"


def _encode_without_seq(event: ev.Event, request_id: str) -> bytes:
    """``Event.encode`` as it was before ``seq``."""
    payload = {"event": event.name, "data": event.data, "request_id": request_id}
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _answer() -> list[ev.Event]:
    queued = {"queue_position": 1, "queue_size": 0, "estimated_wait_sec": 0.0}
    return [
        ev.Event(ev.QUEUED, queued),
        ev.Event(ev.PROCESSING, {"waited_ms": 0}),
        *(ev.Event(ev.ANSWER_CHUNK, f"chunk {i} ") for i in range(10)),
        ev.Event(ev.WORKFLOW_COMPLETE, {"suggested_questions": [], "cached": False}),
    ]


def encode_cost(rounds: int = 7, number: int = 20_000) -> None:
    print("resume-encode: the 13 messages of a 10-chunk answer, encoded in this process")
    events, request_id = _answer(), str(uuid.uuid4())

    def before() -> None:
        for event in events:
            _encode_without_seq(event, request_id)

    def after() -> None:
        for seq, event in enumerate(events, 1):
            event.encode(request_id, seq)

    old = min(timeit.repeat(before, number=number, repeat=rounds)) / number * 1e6
    new = min(timeit.repeat(after, number=number, repeat=rounds)) / number * 1e6
    print(f"  without seq {old:.2f} us, with seq {new:.2f} us per answer")
    print(f"  added per request: {(new - old) / 1000:.4f} ms  (target <= 0.2 ms)")


def _post(path: str, host: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _waiters(url: str, count: int, resumable: bool) -> list[asyncio.StreamWriter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _post(QUEUE, f"{host}:{port}", {"query": "sleep=600", "resumable": resumable})
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        while b"data: " not in await reader.read(65536):
            pass
        writers.append(writer)

    for i in range(0, count, 200):
        await asyncio.gather(*(one() for _ in range(min(200, count - i))))
    return writers


async def _rss_per_waiter(server: BenchServer, count: int, resumable: bool) -> float:
    base = server.rss_kib()
    writers = await _waiters(server.url, count + 1, resumable)
    await asyncio.sleep(1.0)
    per = (server.rss_kib() - base) / count
    for writer in writers:
        writer.close()
    return per


def waiters_memory(count: int) -> None:
    print(f"resume-waiters: {count} waiting clients, plain vs resumable (separate servers)")
    settings = {
        "GUEST_WORKFLOW": SCRIPTED,
        "GUEST_MAX_CONCURRENT_REQUESTS": "1",
        "GUEST_MAX_QUEUE_SIZE": str(count + 10),
        "GUEST_MAX_REQUESTS_PER_CLIENT": "0",
        "GUEST_REQUEST_TIMEOUT_SEC": "900",
    }
    per: dict[bool, float] = {}
    for resumable in (False, True):
        with BenchServer(settings) as server:
            per[resumable] = asyncio.run(_rss_per_waiter(server, count, resumable))
        kind = "resumable" if resumable else "plain"
        print(f"  {kind}: {per[resumable]:.1f} KiB RSS per waiting client")
    print(f"  ratio resumable/plain: {per[True] / per[False]:.2f}  (target <= 1.2)")


async def _first_message_ms(url: str, path: str) -> float:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    buffer = b""
    while b"data: " not in buffer:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"no message: {buffer[:300]!r}")
        buffer += chunk
    elapsed = (loop.time() - started) * 1000
    writer.close()
    return elapsed


async def _resumes(origin: str, readers: dict[str, str], count: int) -> None:
    parts = urlsplit(origin)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    # One long request holds the slot; the measured one waits (its log: one "queued").
    for query in ("sleep=600", "sleep=600 chunks=1"):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(_post(QUEUE, f"{host}:{port}", {"query": query, "resumable": True}))
        data = b""
        while b"\n\n" not in data.split(b"data: ", 1)[-1]:
            data += await reader.read(65536)
        writer.close()
    line = data.split(b"data: ", 1)[1].split(b"\n", 1)[0]
    request_id = json.loads(line)["request_id"]
    path = f"{QUEUE}/{request_id}/events?after=0"
    for name, url in readers.items():
        times = [await _first_message_ms(url, path) for _ in range(count)]
        print(
            f"  {name}: reconnect -> first replayed message p50 {percentile(times, 50):.2f} ms, "
            f"p99 {percentile(times, 99):.2f} ms"
        )


def resume_latency(count: int = 300) -> None:
    print(f"resume-latency: {count} re-attachments each")
    settings = {
        "GUEST_WORKFLOW": SCRIPTED,
        "GUEST_MAX_CONCURRENT_REQUESTS": "1",
        "GUEST_HISTORY_ENABLED": "false",
        "GUEST_RESUME_GRACE_SEC": "600",
    }
    with BenchServer(settings) as server:
        asyncio.run(_resumes(server.url, {"local": server.url}, count))
    print("    (target p50 <= 5 ms)")
    with (
        shared_queue() as shared,
        BenchServer({**settings, **shared}) as a,
        BenchServer({**settings, **shared}, pin=False) as b,
    ):
        readers = {"redis, same process": a.url, "redis, other process": b.url}
        asyncio.run(_resumes(a.url, readers, count))
    print("    (target p50 <= 10 ms)")
