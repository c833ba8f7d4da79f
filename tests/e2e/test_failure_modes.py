"""Failure modes against real servers: clients that vanish, hanging databases, restarts."""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.services import database_url

from .conftest import Server, ServerFactory
from .db_proxy import HangingProxy

API = "/api/v1/guest"


async def post_then_reset(port: int, query: str, delay: float) -> None:
    """Send a whole chat POST, wait ``delay`` seconds, then reset the connection (no FIN)."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"query": query}).encode()
    head = (
        f"POST {API}/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    await asyncio.sleep(delay)
    sock: socket.socket = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def queue_figures(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(f"{url}{API}/queue/status")
    figures: dict[str, Any] = response.json()
    return figures


async def test_clients_that_reset_before_the_first_byte_free_their_places(
    start_server: ServerFactory,
) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="2", GUEST_MAX_QUEUE_SIZE="500")
    rng = random.Random(11)
    # Staggered: a reset that reaches the server before it has read the request
    # discards the request (Linux drops unread data on RST), so nothing would be tested.
    resets = []
    for i in range(200):
        delay = rng.uniform(0, 0.02)
        resets.append(asyncio.ensure_future(post_then_reset(server.port, f"sleep=5 n={i}", delay)))
        await asyncio.sleep(0.005)
    await asyncio.gather(*resets)
    last_reset = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        figures = await queue_figures(client, server.url)
        assert figures["total_requests"] > 0  # the resets did reach the queue
        while figures["queue_size"] or figures["active_requests"]:
            assert time.monotonic() - last_reset < 2.0, figures
            await asyncio.sleep(0.05)
            figures = await queue_figures(client, server.url)


@pytest.fixture
def db_proxy() -> Iterator[HangingProxy]:
    proxy = HangingProxy(database_url())
    yield proxy
    proxy.close()


@pytest.mark.xdist_group("postgres-named-database")
async def test_a_hanging_history_database_does_not_stall_chat(
    start_server: ServerFactory, db_proxy: HangingProxy
) -> None:
    server = start_server(
        DATABASE_URL=db_proxy.url,
        # The rows it cannot write at exit: the bound has its own test below; don't wait 10 s.
        GUEST_HISTORY_FLUSH_TIMEOUT_SEC="1",
    )
    db_proxy.hang()
    async with httpx.AsyncClient(timeout=15) as client:

        async def look_up() -> tuple[httpx.Response, float]:
            began = time.monotonic()
            response = await client.get(f"{server.url}{API}/queue/request/{uuid.uuid4()}")
            return response, time.monotonic() - began

        async def chat(i: int) -> httpx.Response:
            await asyncio.sleep(0.2)  # after the lookups have taken what they take
            return await client.post(f"{server.url}{API}/chat/simple", json={"query": f"n={i}"})

        lookups = asyncio.gather(*(look_up() for _ in range(12)))
        chats = asyncio.gather(*(chat(i) for i in range(4)))
        looked_up, chatted = await asyncio.gather(lookups, chats)
    for response, took in looked_up:
        assert response.status_code == 503 and took < 5
        assert response.json()["code"] == "history_unavailable"
        assert response.headers["retry-after"]
    for response in chatted:
        assert response.status_code == 200 and response.json()["status"] == "completed"


def stop_and_time(server: Server) -> float:
    """SIGTERM the server; how long it took to exit (at most 60 s, then it is killed)."""
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        return math.inf
    return time.monotonic() - began


async def test_a_client_trickling_a_body_cannot_hold_a_restart(
    start_server: ServerFactory,
) -> None:
    server = start_server(graceful_sec=2)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST {API}/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n{".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    took = await asyncio.to_thread(stop_and_time, server)
    writer.close()
    assert took < 2 + 5, server.output()


@pytest.mark.xdist_group("postgres-named-database")
async def test_the_history_flush_at_exit_is_bounded_when_the_database_hangs(
    start_server: ServerFactory, db_proxy: HangingProxy
) -> None:
    server = start_server(DATABASE_URL=db_proxy.url, GUEST_HISTORY_FLUSH_TIMEOUT_SEC="2")
    async with httpx.AsyncClient(timeout=15) as client:
        answer = await client.post(f"{server.url}{API}/chat/simple", json={"query": "chunks=1"})
        assert answer.status_code == 200  # its history row waits in the buffer (flush 30 s)
    db_proxy.hang()
    took = await asyncio.to_thread(stop_and_time, server)
    assert took < 2 + 6, server.output()
    assert "1 rows not written at shutdown" in server.output()


async def test_a_second_local_queue_of_the_same_site_is_reported(
    start_server: ServerFactory,
) -> None:
    first = start_server()
    second = start_server()
    async with httpx.AsyncClient(timeout=10) as client:
        first_health = (await client.get(f"{first.url}{API}/health")).json()
        second_health = (await client.get(f"{second.url}{API}/health")).json()
        assert first_health["warnings"] == []
        (warning,) = second_health["warnings"]
        assert f"pid {first.process.pid}" in warning
        assert (
            "one worker per queue" in warning
            and 'GUEST_QUEUE_BACKEND = {"BACKEND": "redis"' in warning
        )
        assert warning in second.output()
        # The lock goes with the process that held it: a process started after it is alone.
        first.stop()
        third = start_server()
        assert (await client.get(f"{third.url}{API}/health")).json()["warnings"] == []
