"""Resumable requests across real uvicorn processes sharing a queue on the real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import httpx
import redis

from .conftest import Server, ServerFactory
from .test_shared_queue import shared_env

TERMINAL = {"workflow_complete", "error", "timeout"}


class ResumingGuest:
    """A guest whose reconnects a load balancer may send to any process."""

    def __init__(self, client: httpx.AsyncClient, servers: list[Server], query: str) -> None:
        self.client = client
        self.servers = servers
        self.events: list[dict[str, Any]] = []
        self.resumes: list[int] = []  # which server each resume went to
        self.tries: list[tuple[int, object]] = []
        self.query = query
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    @property
    def seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    async def _read(self, response: httpx.Response, stop_after: int | None = None) -> bool:
        """Collect messages; True at the terminal event."""
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                self.events.append(event)
                if event["event"] in TERMINAL:
                    return True
                if stop_after is not None and len(self.events) >= stop_after:
                    return False
        return False

    async def post(self, server: Server, stop_after: int | None = None) -> bool:
        body = {"query": self.query, "resumable": True}
        url = f"{server.url}/api/v1/guest/chat"
        async with self.client.stream("POST", url, json=body) as response:
            assert response.status_code == 200, await response.aread()
            return await self._read(response, stop_after)

    async def resume(self, prefer: int) -> None:
        """Resume until the terminal event, trying the processes from ``prefer`` on."""
        request_id = self.events[0]["request_id"]
        for attempt in range(60):
            index = (prefer + attempt) % len(self.servers)
            server = self.servers[index]
            url = f"{server.url}/api/v1/guest/chat/{request_id}/events"
            try:
                async with self.client.stream("GET", url, params={"after": self.seq}) as r:
                    self.tries.append((index, r.status_code))
                    if r.status_code != 200:
                        await r.aread()
                        assert r.status_code == 503, (r.status_code, r.text)
                        await asyncio.sleep(0.1)
                        continue
                    self.resumes.append(index)
                    if await self._read(r):
                        return
            except httpx.TransportError as exc:
                self.tries.append((index, repr(exc)))
                await asyncio.sleep(0.1)
        raise AssertionError(f"never finished: {[e['event'] for e in self.events]}")

    async def _run(self) -> None:
        if not await self.post(self.servers[0]):
            await self.resume(prefer=1)

    def text(self) -> str:
        return "".join(e["data"] for e in self.events if e["event"] == "answer_chunk")


async def test_a_resume_on_another_process_gets_exactly_the_rest(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str
) -> None:
    env = shared_env(
        redis_test_url, redis_test_prefix, GUEST_WORKFLOW="tests.scripted.ScriptedWorkflow"
    )
    servers = [start_server(**env) for _ in range(2)]
    async with httpx.AsyncClient(timeout=30) as client:
        guest = ResumingGuest(client, servers, "chunks=12 delay=0.1")
        # The connection drops after the third message (queued, processing, one chunk).
        assert not await guest.post(servers[0], stop_after=3)
        await asyncio.sleep(0.3)
        await guest.resume(prefer=1)
    assert guest.resumes == [1]
    assert [e["seq"] for e in guest.events] == list(range(1, len(guest.events) + 1))
    assert guest.text() == "".join(f"chunk{i} " for i in range(12))
    assert guest.events[-1]["event"] == "workflow_complete"


async def test_a_rolling_restart_answers_every_waiting_guest_in_order(
    start_server: ServerFactory,
    redis_test_url: str,
    redis_test_prefix: str,
    probe: redis.Redis,
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_MAX_CONCURRENT_REQUESTS="1",
        GUEST_SHUTDOWN_GRACE_SEC="10",
        GUEST_RESUME_GRACE_SEC="20",
    )
    old, new = start_server(**env), start_server(**env)
    async with httpx.AsyncClient(timeout=30) as client:
        guests = [ResumingGuest(client, [old, new], f"r{i} sleep=1 chunks=2") for i in range(4)]
        for guest in guests:
            guest.start()
            while not guest.events:
                await asyncio.sleep(0.01)
        assert [g.events[0]["data"]["queue_position"] for g in guests] == [1, 1, 2, 3]
        old.process.terminate()  # SIGTERM: the deploy drains this worker
        await asyncio.wait_for(asyncio.gather(*(g.task for g in guests if g.task)), 40)
        old.process.wait(20)
    for guest in guests:
        names = [e["event"] for e in guest.events]
        assert names[-1] == "workflow_complete", names
        assert "error" not in names and guest.text() == "chunk0 chunk1 "
        assert [e["seq"] for e in guest.events] == list(range(1, len(guest.events) + 1))
    # The one answering finished on the old worker; the waiting ones moved to the new one.
    assert guests[0].resumes == [] and all(g.resumes and g.resumes[-1] == 1 for g in guests[1:])
    assert all("reconnect" in [e["event"] for e in g.events] for g in guests[1:])
    key = "{" + redis_test_prefix + "}:probe"
    started = [q.split()[0] for q in cast(list[str], probe.lrange(f"{key}:started", 0, -1))]
    assert started == ["r0", "r1", "r2", "r3"]


async def test_a_resume_on_another_process_closes_the_older_connection(
    start_server: ServerFactory, redis_test_url: str, redis_test_prefix: str
) -> None:
    env = shared_env(
        redis_test_url, redis_test_prefix, GUEST_WORKFLOW="tests.scripted.ScriptedWorkflow"
    )
    servers = [start_server(**env) for _ in range(2)]
    body = {"query": "chunks=30 delay=0.1", "resumable": True}
    url = f"{servers[0].url}/api/v1/guest/chat"
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url, json=body) as old,
    ):
        lines = old.aiter_lines()
        first: list[dict[str, Any]] = []
        async for line in lines:
            if line.startswith("data: "):
                first.append(json.loads(line[6:]))
                if len(first) == 3:
                    break
        guest = ResumingGuest(client, servers, "chunks=30 delay=0.1")
        guest.events = list(first)
        newer = asyncio.ensure_future(guest.resume(prefer=1))
        # The older connection (still open, on the other process) is closed promptly,
        # long before its answer (3 s) would have ended it.
        later: list[str] = []

        async def rest() -> None:
            async for line in lines:
                later.append(line)

        await asyncio.wait_for(rest(), 2.0)
        assert not any('"workflow_complete"' in line for line in later)
        await asyncio.wait_for(newer, 10)
    assert guest.resumes == [1]
    assert guest.events[-1]["event"] == "workflow_complete"
    assert guest.text() == "".join(f"chunk{i} " for i in range(30))
