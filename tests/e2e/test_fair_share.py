"""Fair share on real servers: clients told apart by their loopback source address.

Every client binds its own address (127.0.0.2, 127.0.0.3, …), so the server sees
distinct ``REMOTE_ADDR`` values exactly as it would see distinct guests.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Server, ServerFactory, client_at
from .test_shared_queue import shared_env

STATUS = "/api/v1/guest/queue/status"
CHAT = "/api/v1/guest/chat"


async def status(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as c:
        return (await c.get(server.url + STATUS)).json()  # type: ignore[no-any-return]


class Streams:
    """Streams a client keeps open, counted as they open and close."""

    def __init__(self, http: httpx.AsyncClient, server: Server) -> None:
        self.http, self.server = http, server
        self.open = 0
        self.most_open = 0
        self.refusals: list[str] = []
        self.answered = 0

    async def ask(self, query: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with self.http.stream("POST", self.server.url + CHAT, json={"query": query}) as r:
            if r.status_code != 200:
                self.refusals.append(json.loads(await r.aread())["code"])
                return events
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            try:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
            finally:
                self.open -= 1
        self.answered += 1
        return events


async def test_a_flood_from_one_address_holds_at_most_the_cap_and_others_get_through(
    start_server: ServerFactory,
) -> None:
    cap, answer_sec = 3, 0.3
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1", GUEST_MAX_REQUESTS_PER_CLIENT=str(cap))
    async with client_at("127.0.0.2") as flooder_http, client_at("127.0.0.3") as guest_http:
        flood = Streams(flooder_http, server)
        stop = asyncio.Event()

        async def flood_loop() -> None:
            while not stop.is_set():
                batch = [flood.ask(f"flood sleep={answer_sec} chunks=1") for _ in range(20)]
                await asyncio.gather(*batch)

        flooding = asyncio.ensure_future(flood_loop())
        # The server's own count of the flooder's requests, sampled while it floods alone.
        held = []
        for _ in range(20):
            await asyncio.sleep(0.05)
            queue = await status(server)
            held.append(queue["queue_size"] + queue["active_requests"])
        assert max(held) <= cap and max(held) >= 1
        guest = Streams(guest_http, server)
        events = await guest.ask(f"guest sleep={answer_sec} chunks=1")
        stop.set()
        await flooding
    assert guest.refusals == [] and events[-1]["event"] == "workflow_complete"
    positions = [e["data"]["queue_position"] for e in events if e["event"] == "queued"]
    # At most the flooder's cap ahead of the guest: answered within cap + 1 turns.
    assert positions[0] <= cap and positions == sorted(positions, reverse=True)
    # Seen from the client, a stream still delivering its last bytes may overlap the next
    # one the server accepted once the first had ended (two connections, no common
    # order): at most one more than the cap, never more.
    assert flood.most_open <= cap + 1 and flood.answered >= cap
    assert set(flood.refusals) == {"client_limit"}
    final = await status(server)
    assert final["rejected_client_limit"] == len(flood.refusals)
    assert final["rejected_queue_full"] == 0


@pytest.fixture
def many_sockets() -> Iterator[None]:
    """Room for a few thousand sockets in this process and the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < 5000:
        pytest.skip(f"needs about 5000 file descriptors; the hard limit is {hard}")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def raw_post(port: int, query: str, source: str) -> tuple[int, bytes, asyncio.StreamWriter]:
    """POST with a bare socket: the status, the rest of a refusal (read to EOF), the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    body = json.dumps({"query": query}).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    status_line = await reader.readline()
    code = int(status_line.split()[1])
    if code == 200:
        return code, b"", writer
    # A refusal: the server must close the connection, not keep it for anything.
    rest = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return code, rest, writer


# Two thousand sockets at once take both cores of a small machine: alone, under pytest-xdist.
@pytest.mark.exclusive
async def test_two_thousand_identical_questions_from_one_address(
    start_server: ServerFactory, many_sockets: None
) -> None:
    cap = 3
    server = start_server(
        GUEST_MAX_CONCURRENT_REQUESTS="1",
        GUEST_MAX_REQUESTS_PER_CLIENT=str(cap),
        GUEST_CACHE_ENABLED="true",
    )
    query = "the same question sleep=30 chunks=1"
    results = await asyncio.gather(
        *(raw_post(server.port, query, "127.0.0.2") for _ in range(2000))
    )
    accepted = [writer for code, _, writer in results if code == 200]
    refused = [rest for code, rest, _ in results if code != 200]
    try:
        assert len(accepted) == cap and len(refused) == 2000 - cap, (
            {code for code, _, _ in results},
            refused[:1],
        )
        assert all(b'"code": "client_limit"' in rest for rest in refused)
        assert all(b"retry-after:" in rest.lower() for rest in refused)
        queue = await status(server)
        # One leader in line, the rest following it; nothing else held for this client.
        assert queue["total_requests"] == cap
        assert queue["queue_size"] + queue["active_requests"] == cap
        assert queue["rejected_client_limit"] == 2000 - cap
        # Another guest still gets in at once: in line behind the leader's 30 s answer (not
        # waiting that answer out to read its own to the end).
        async with (
            client_at("127.0.0.3") as other,
            other.stream("POST", server.url + CHAT, json={"query": "another chunks=1"}) as response,
        ):
            assert response.status_code == 200
            data = (line async for line in response.aiter_lines() if line.startswith("data: "))
            first = await anext(data)
            assert json.loads(first.removeprefix("data: "))["event"] == "queued", first
    finally:
        for writer in accepted:
            writer.close()


async def test_identical_questions_from_many_addresses_keep_the_follower_bound(
    start_server: ServerFactory,
) -> None:
    size = 5
    server = start_server(
        GUEST_MAX_CONCURRENT_REQUESTS="1",
        GUEST_MAX_QUEUE_SIZE=str(size),
        GUEST_CACHE_ENABLED="true",
    )
    query = "popular question sleep=30 chunks=1"
    results = await asyncio.gather(
        *(raw_post(server.port, query, f"127.0.0.{i}") for i in range(2, 32))
    )
    accepted = [writer for code, _, writer in results if code == 200]
    refused = [rest for code, rest, _ in results if code != 200]
    try:
        # One leader, then at most the queue's size of followers; the rest: the line is full.
        assert len(accepted) == 1 + size
        assert len(refused) == 30 - 1 - size
        assert all(b'"code": "queue_full"' in rest for rest in refused)
        queue = await status(server)
        assert queue["rejected_queue_full"] == len(refused)
        assert queue["queue_size"] == size  # the followers wait for their leader
    finally:
        for writer in accepted:
            writer.close()


async def test_the_cap_is_global_across_processes_and_heals_after_a_sigkill(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_MAX_CONCURRENT_REQUESTS="3",
        GUEST_MAX_REQUESTS_PER_CLIENT="2",
    )
    doomed, survivor = start_server(**env), start_server(**env)
    async with client_at("127.0.0.2") as http, client_at("127.0.0.3") as other:
        streams = Streams(http, doomed), Streams(http, survivor)
        held = [
            asyncio.ensure_future(streams[0].ask("one sleep=60")),
            asyncio.ensure_future(streams[1].ask("two sleep=60")),
        ]
        while sum(s.open for s in streams) < 2:
            await asyncio.sleep(0.02)
        for server in (doomed, survivor):
            refused = await http.post(server.url + CHAT, json={"query": "three"})
            assert refused.status_code == 429 and refused.json()["code"] == "client_limit"
            assert int(refused.headers["retry-after"]) >= 1
        # The cap is the client's, not the queue's: another guest lines up.
        assert (await other.post(survivor.url + CHAT + "/simple", json={"query": "x"})).status_code
        doomed.process.kill()  # SIGKILL: its request never says goodbye.
        killed = time.monotonic()
        while True:
            response = await http.post(survivor.url + CHAT + "/simple", json={"query": "again"})
            if response.status_code != 429:
                break
            assert time.monotonic() - killed < 1.5 + 1.5, "the dead process's request still counts"
            await asyncio.sleep(0.1)
        healed = time.monotonic() - killed
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    assert healed < 3.0


async def test_the_rate_limit_refuses_then_lets_through_after_the_window(
    start_server: ServerFactory,
) -> None:
    server = start_server(GUEST_RATE_LIMIT="3/2s")
    simple = server.url + CHAT + "/simple"
    async with client_at("127.0.0.2") as http, client_at("127.0.0.3") as other:
        # Start at the beginning of a window, so that all four fall in the same one.
        await asyncio.sleep(2 - time.time() % 2 + 0.05)
        codes = [(await http.post(simple, json={"query": f"q{i} chunks=1"})) for i in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert codes[-1].json()["code"] == "rate_limited"
        wait = int(codes[-1].headers["retry-after"])
        assert 1 <= wait <= 2
        # Another address has its own allowance.
        assert (await other.post(simple, json={"query": "mine chunks=1"})).status_code == 200
        await asyncio.sleep(wait + 0.1)
        assert (await http.post(simple, json={"query": "later chunks=1"})).status_code == 200
    queue = await status(server)
    assert queue["rejected_rate_limited"] == 1 and queue["rejected_requests"] == 1
