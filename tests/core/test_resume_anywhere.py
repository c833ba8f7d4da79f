"""``QueueManager.resume(id, after)``: the stream of a resumable request after a message,
wherever the request is held, or a typed error saying why there is none."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from guest_queue.core.backends.redis.rates import RedisWindowCounter
from guest_queue.core.errors import NotAccepting
from guest_queue.core.eventlog import LogTrimmed
from guest_queue.core.manager import QueueManager
from guest_queue.core.resume import LogExpired, NotSentYet, UnknownRequest

from .conftest import Factory, make_manager, until
from .test_redis_resume import Held, until_state
from .test_resume import Reader, chunks


async def messages(stream: AsyncIterator[bytes], count: int) -> list[tuple[int, dict[str, Any]]]:
    """The first ``count`` messages of a resumed stream: (its ``id:`` line, its JSON)."""
    found: list[tuple[int, dict[str, Any]]] = []
    async with asyncio.timeout(5):
        async for part in stream:
            for message in part.decode().split("\n\n"):
                if message.startswith("data: "):
                    data, id_line = message.split("\n")
                    found.append((int(id_line[len("id: ") :]), json.loads(data[len("data: ") :])))
            if len(found) >= count:
                break
    await stream.aclose()  # type: ignore[attr-defined]
    return found[:count]


async def started(manager: QueueManager, flow: Held) -> tuple[str, int]:
    """A resumable request that has sent its first three chunks, its reader gone."""
    ticket = await manager.submit("q")
    reader = Reader(manager, manager.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    return ticket.request_id, reader.seqs[-1]


async def test_a_resume_here_sends_what_came_after_with_ids() -> None:
    flow = Held()
    manager = make_manager(flow, resume_grace_sec=5)
    rid, last = await started(manager, flow)
    got = await messages(await manager.resume(rid, 1), last - 1)
    assert [seq for seq, _ in got] == list(range(2, last + 1))
    assert [data["seq"] for _, data in got] == list(range(2, last + 1))
    assert {data["request_id"] for _, data in got} == {rid}
    flow.release.set()
    await manager.close()


async def test_a_resume_here_names_what_is_wrong() -> None:
    flow = Held()
    manager = make_manager(flow, resume_grace_sec=5, resume_log_max_events=3)
    with pytest.raises(UnknownRequest):
        await manager.resume("00000000-0000-4000-8000-000000000000", 0)
    rid, last = await started(manager, flow)
    with pytest.raises(NotSentYet) as sent:
        await manager.resume(rid, last + 1)
    assert sent.value.after == last + 1
    # Only the last three messages are kept: those after the first are gone.
    with pytest.raises(LogTrimmed):
        await manager.resume(rid, 1)
    got = await messages(await manager.resume(rid, last - 1), 1)
    assert got[0][0] == last
    flow.release.set()
    await manager.close()


async def test_a_resume_on_another_process_names_what_is_wrong(shared: Factory) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=5)
    b = shared(flow, resume_grace_sec=5)
    with pytest.raises(UnknownRequest):
        await b.resume("00000000-0000-4000-8000-000000000000", 0)
    rid, last = await started(a, flow)
    logs = a.resumes.shared
    assert logs is not None
    await until(lambda: logs.flushed)  # type: ignore[attr-defined]
    with pytest.raises(NotSentYet):
        await b.resume(rid, last + 1)
    # (Redis trims a log by whole nodes of ~100 entries: no trimming to see with five.)
    got = await messages(await b.resume(rid, last - 1), 1)
    assert got[0][0] == last and got[0][1]["event"] == "answer_chunk"
    flow.release.set()
    await until(lambda: a.status()["completed_requests"] == 1)
    b.begin_drain()
    with pytest.raises(NotAccepting):
        await b.resume(rid, last)


async def test_a_resume_of_a_finished_request_whose_log_is_gone_says_expired(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    b = shared(flow, resume_grace_sec=0.3)
    rid, _ = await started(a, flow)
    flow.release.set()
    await until(lambda: a.status()["completed_requests"] == 1)
    await until_state(b, rid, "expired")
    with pytest.raises(LogExpired):
        await b.resume(rid, 0)


async def test_the_shared_rate_counter_counts_each_event_once(
    redis_test_url: str, redis_test_prefix: str
) -> None:
    client = Redis.from_url(redis_test_url)
    try:
        counter = RedisWindowCounter(client, f"{redis_test_prefix}:")
        # 30 at once against a limit of 5: exactly 5 pass, whatever the interleaving.
        results = await asyncio.gather(*(counter.count(["one"], [5], 30) for _ in range(30)))
        assert results.count(0) == 5 and set(results) == {0, 1}
        # The narrow key stops first; past it, the wider key's limit names the wider key.
        assert await counter.count(["narrow", "wide"], [2, 1], 30) == 0
        assert await counter.count(["narrow", "wide"], [2, 1], 30) == 2
        assert await counter.count(["narrow2", "wide"], [2, 9], 30) == 0
        ttl = await client.ttl(f"{redis_test_prefix}:one")
        assert 0 < ttl <= 30
    finally:
        await client.aclose()
