"""Oversized bodies sent to real servers: refused after the limit, nothing spooled or kept,
and the JSON 413 read by clients that are still uploading."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from guest_queue.asgi.body_limit import LINGER_MAX_BYTES, LINGER_MAX_SEC

from .conftest import Server, ServerFactory

GIB = 1 << 30
MB = 1_000_000
CHUNK = 64 * 1024
LIMIT = 65536  # GUEST_MAX_BODY_BYTES default
# What the kernel may buffer between client and server on loopback (both socket buffers),
# generously: the body the client manages to send before the 413 is this at most, not 1 GiB.
IN_FLIGHT = 32 << 20


def body(total: int, chunked: bool) -> Iterator[bytes]:
    """A body produced as it is sent, never held in memory."""
    block = b"x" * CHUNK
    sent = 0
    while sent < total:
        yield (b"%x\r\n" % CHUNK + block + b"\r\n") if chunked else block
        sent += CHUNK
    if chunked:
        yield b"0\r\n\r\n"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def is_site_lock(path: Path) -> bool:
    """The local queue's one-per-site lock (guest_queue.runtime.site_lock), not a spooled body."""
    return path.name.startswith("guest-queue-") and path.name.endswith(".lock")


def spooled(pid: int, spool: Path) -> int:
    """Bytes in files under ``spool`` the server holds open (deleted temporary files too)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(str(spool)) and not is_site_lock(Path(target)):
                total += os.stat(fd).st_size
        except OSError:
            continue
    return total


def upload(server: Server, spool: Path, chunked: bool) -> tuple[int, dict[str, object], int, int]:
    """Send a 1 GiB POST until a response comes: (status, JSON, bytes sent, most spooled)."""
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % GIB
    head = (
        b"POST /api/v1/guest/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n" + length + b"\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(head)
    sent = most_spooled = 0
    pending = b""
    chunks = body(GIB, chunked)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                break
            if writable:
                pending = pending or next(chunks, b"")
                if not pending:
                    break
                try:
                    n = sock.send(pending)
                except OSError:
                    break  # the server closed: read what it answered
                pending = pending[n:]
                sent += n
                if sent % (16 * CHUNK) < n:
                    most_spooled = max(most_spooled, spooled(server.process.pid, spool))
        most_spooled = max(most_spooled, spooled(server.process.pid, spool))
        sock.settimeout(10)
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < 2:
            part = sock.recv(65536)
            if not part:
                break
            raw += part
    finally:
        sock.close()
    status_line, _, rest = raw.partition(b"\r\n")
    payload = rest.split(b"\r\n\r\n", 1)[1]
    return int(status_line.split()[1]), json.loads(payload), sent, most_spooled


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_1_gib_upload_is_refused_without_being_read(
    start_server: ServerFactory, tmp_path: Path, chunked: bool
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # Django spools bodies past 2.5 MB to TMPDIR: point it somewhere this test watches.
    server = start_server("uvicorn", TMPDIR=str(spool))
    assert httpx.get(f"{server.url}/api/v1/guest/health").status_code == 200
    before = rss(server.process.pid)
    started = time.monotonic()
    status, payload, sent, most_spooled = upload(server, spool, chunked)
    elapsed = time.monotonic() - started
    assert status == 413, payload
    assert payload["code"] == "body_too_large"
    # Refused after the limit, plus what the refusal reads away so the client can read it
    # (LINGER_MAX_BYTES at most), plus what the sockets held: not after the gigabyte.
    assert sent < LIMIT + LINGER_MAX_BYTES + IN_FLIGHT, (sent, elapsed)
    assert most_spooled == 0
    assert [p for p in spool.iterdir() if not is_site_lock(p)] == []
    assert rss(server.process.pid) - before < 16 << 20
    # The server goes on serving.
    response = httpx.post(
        f"{server.url}/api/v1/guest/chat/simple", json={"query": "chunks=1"}, timeout=10
    )
    assert response.status_code == 200


async def post(url: str, content: bytes | AsyncIterator[bytes], length: str = "") -> httpx.Response:
    """POST as an ordinary asyncio client does: the whole body written, then the answer read."""
    headers = {"content-type": "application/json"}
    if length:
        headers["content-length"] = length
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{url}/api/v1/guest/chat", content=content, headers=headers)


async def blocks(total: int, counter: list[int]) -> AsyncIterator[bytes]:
    """``total`` bytes, produced as they are sent; ``counter[0]`` counts those handed over."""
    block = b"x" * CHUNK
    while counter[0] < total:
        counter[0] += CHUNK
        yield block


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_still_uploading_reads_the_json_413(
    start_server: ServerFactory, kind: str, chunked: bool
) -> None:
    # httpx.AsyncClient writes the whole 3 MB before it reads the answer. Had the server
    # closed the connection on the bytes still coming, the TCP reset would destroy the 413
    # (httpx: ReadError, 3 times out of 3 before the refusal read the rest of the body).
    server = start_server(kind)

    async def three() -> list[tuple[int, object]]:
        answers = []
        for _ in range(3):
            content = blocks(3 * MB, [0]) if chunked else b"x" * (3 * MB)
            response = await post(server.url, content)
            answers.append((response.status_code, response.json()))
        return answers

    refusal = {"error": f"The request body exceeds {LIMIT} bytes.", "code": "body_too_large"}
    assert asyncio.run(three()) == [(413, refusal)] * 3


def test_a_body_far_beyond_what_a_refusal_reads_still_ends_at_once(
    start_server: ServerFactory,
) -> None:
    # 100 MB: the refusal reads at most LINGER_MAX_BYTES of it, then the server closes.
    server = start_server("uvicorn")
    sent = [0]
    started = time.monotonic()
    body = blocks(100 * MB, sent)
    try:
        outcome: object = asyncio.run(post(server.url, body, str(100 * MB)))
    except httpx.TransportError as error:
        outcome = error  # the reset, past the bound: the client is still writing
    elapsed = time.monotonic() - started
    assert elapsed < 5, (outcome, elapsed)
    assert sent[0] < LIMIT + LINGER_MAX_BYTES + IN_FLIGHT, (outcome, sent[0])
    response = httpx.post(
        f"{server.url}/api/v1/guest/chat/simple", json={"query": "chunks=1"}, timeout=10
    )
    assert response.status_code == 200


def test_a_client_that_stops_sending_after_a_413_is_let_go(start_server: ServerFactory) -> None:
    server = start_server("uvicorn")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        b"POST /api/v1/guest/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 100_000
    )
    started = time.monotonic()
    raw = b""
    try:
        while part := sock.recv(65536):
            raw += part
    finally:
        sock.close()
    # The 413 at once, then the connection closed after LINGER_MAX_SEC, not held for the rest.
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert LINGER_MAX_SEC - 0.5 < time.monotonic() - started < LINGER_MAX_SEC + 2
