"""Resumable requests on a shared queue: a resume on another process finds the log in Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from guest_queue.core.resume import read_shared

from .conftest import until
from .test_redis_queue import Factory, shared  # noqa: F401 (the fixture)
from .test_resume import Reader, chunks


class Held:
    """Streams three chunks, waits for ``release``, then three more."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stream(self, request: Any) -> Any:
        for i in range(3):
            yield f"a{i} "
        await self.release.wait()
        for i in range(3):
            yield f"b{i} "
        yield {"event": "workflow_complete", "data": {"suggested_questions": []}}


class SharedReader:
    """A reader on another process: the log from Redis."""

    def __init__(self, manager: Any, request_id: str, after: int) -> None:
        self.events: list[dict[str, Any]] = []
        gen = read_shared(manager.resumes.shared, request_id, after, with_ids=True, heartbeat=0.5)
        self.task = asyncio.ensure_future(self._consume(gen))

    async def _consume(self, gen: Any) -> None:
        async for part in gen:
            for message in part.decode().split("\n\n"):
                if message.startswith("data: "):
                    self.events.append(json.loads(message.split("\n")[0][len("data: ") :]))

    def text(self) -> str:
        return "".join(e["data"] for e in self.events if e["event"] == "answer_chunk")


async def test_a_resume_on_another_process_gets_the_rest_and_keeps_it_alive(
    shared: Factory,  # noqa: F811
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    b = shared(flow, resume_grace_sec=0.3)
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    seen = reader.seqs[-1]
    assert b.resumes.shared is not None
    assert await b.resumes.shared.state(ticket.request_id) == "live"
    other = SharedReader(b, ticket.request_id, seen)
    await asyncio.sleep(1.0)  # well past the grace: the reader on b keeps it alive
    assert ticket.record.status.value == "processing"
    flow.release.set()
    await asyncio.wait_for(other.task, 5)
    assert other.text() == "b0 b1 b2 "
    assert [e["seq"] for e in other.events] == list(range(seen + 1, seen + 1 + len(other.events)))
    assert other.events[-1]["event"] == "workflow_complete"
    assert a.status()["completed_requests"] == 1 and a.status()["cancelled_requests"] == 0
    await until(lambda: a.resumes.by_id == {}, timeout=3)
    await until_state(b, ticket.request_id, "expired")


async def test_nobody_on_any_process_ends_it_after_the_grace(
    shared: Factory,  # noqa: F811
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    await until(lambda: a.status()["cancelled_requests"] == 1)
    await until(lambda: a.status()["active_requests"] == 0)


async def until_state(manager: Any, request_id: str, state: str) -> None:
    async with asyncio.timeout(5):
        while await manager.resumes.shared.state(request_id) != state:
            await asyncio.sleep(0.05)
