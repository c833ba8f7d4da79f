"""The Redis log of resumable requests, read and written directly: gaps, blocking reads,
TTLs, the cap, claims given up, and what an unknown or unreachable log says."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from guest_queue.core.backends.redis.link import UNREACHABLE
from guest_queue.core.backends.redis.logs import DONE_MEMORY_SEC, LIVE_TTL_MARGIN_SEC
from guest_queue.core.errors import Unavailable
from guest_queue.core.eventlog import LogTrimmed
from guest_queue.core.events import Event

from ..services import closed_port
from .conftest import Factory, admission, until
from .test_redis_resume import Held

RID = "00000000-0000-4000-8000-0000000000d1"
DONE = Event("workflow_complete", {"suggested_questions": []})


def logs_of(shared: Factory, **config: Any) -> Any:
    logs = shared(Held(), **config).resumes.shared
    assert logs is not None
    return logs


def chunk(i: int) -> Event:
    return Event("answer_chunk", f"c{i} ")


async def test_a_read_from_just_before_a_gap_says_trimmed(shared: Factory) -> None:
    logs = logs_of(shared)
    for seq in (3, 4):
        logs.append(RID, seq, chunk(seq))
    await until(lambda: logs.flushed)
    with pytest.raises(LogTrimmed):
        await logs.read(RID, 1, 0.01)
    assert [s for s, _ in await logs.read(RID, 2, 0.01)] == [3, 4]


async def test_a_read_with_nothing_new_waits_for_the_next_event(
    shared: Factory,
) -> None:
    logs = logs_of(shared, redis_timeout_sec=3)
    logs.append(RID, 1, chunk(1))
    await until(lambda: logs.flushed)

    async def later() -> None:
        await asyncio.sleep(0.2)
        logs.append(RID, 2, chunk(2))

    task = asyncio.ensure_future(later())
    started = time.monotonic()
    got = await logs.read(RID, 1, 1.2)
    await task
    assert [(s, e.data) for s, e in got] == [(2, "c2 ")]
    assert time.monotonic() - started >= 0.15


async def test_a_waiting_guests_log_is_kept_alive_by_a_touch(
    shared: Factory,
) -> None:
    logs = logs_of(shared)
    key = f"{logs.tag}:log:{RID}"
    logs.append(RID, 1, chunk(1))
    await until(lambda: logs.flushed)
    await logs.client.pexpire(key, 2000)
    logs.touch(RID)
    await until(lambda: logs.flushed)
    await asyncio.sleep(0.05)
    assert await logs.client.pttl(key) > 10_000


async def test_a_finished_logs_id_is_remembered_for_an_hour_not_forever(
    shared: Factory,
) -> None:
    logs = logs_of(shared)
    logs.append(RID, 1, DONE)
    await until(lambda: logs.flushed)
    await asyncio.sleep(0.05)
    assert 0 < await logs.client.ttl(f"{logs.tag}:logdone:{RID}") <= DONE_MEMORY_SEC


async def test_a_long_answer_is_capped_in_redis(shared: Factory) -> None:
    logs = logs_of(shared, resume_log_max_events=10)
    for seq in range(1, 401):
        logs.append(RID, seq, chunk(seq))
    await until(lambda: logs.flushed)
    await asyncio.sleep(0.05)
    assert await logs.client.xlen(f"{logs.tag}:log:{RID}") < 300


async def test_an_id_never_seen_is_unknown_not_expired(shared: Factory) -> None:
    logs = logs_of(shared)
    assert await logs.state(RID) is None


async def test_a_reader_leaving_gives_its_claim_up_at_once(shared: Factory) -> None:
    logs = logs_of(shared)
    number = await logs.claim(RID, 30.0)
    assert await logs.attached(RID) and await logs.newest_claim(RID) == number
    await logs.unclaim(RID, number)
    assert not await logs.attached(RID)


async def test_redis_down_says_why_and_when_to_retry(shared: Factory) -> None:
    logs = logs_of(shared, redis_url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=1.2)
    for lookup in (logs.state, logs.cancel):
        with pytest.raises(Unavailable) as raised:
            await lookup(RID)
        assert raised.value.message == UNREACHABLE
        assert isinstance(raised.value.retry_after, int) and raised.value.retry_after >= 1


async def test_a_logs_lifetime_covers_the_grace_the_limits_and_the_wait_exactly(
    shared: Factory,
) -> None:
    # Open: the whole time a request may still run and be resumed (grace + wait in line +
    # processing limit + a margin); finished: the resume grace only.
    logs = logs_of(shared, resume_grace_sec=20, request_timeout_sec=50, max_queue_wait_sec=300)
    key = f"{logs.tag}:log:{RID}"
    logs.append(RID, 1, chunk(1))
    await until(lambda: logs.flushed)
    live_ms = (20 + 50 + 300 + LIVE_TTL_MARGIN_SEC) * 1000
    assert live_ms - 2000 < await logs.client.pttl(key) <= live_ms
    logs.append(RID, 2, DONE)
    await until(lambda: logs.flushed)
    assert 20_000 - 2000 < await logs.client.pttl(key) <= 20_000


async def test_closing_logs_that_never_wrote_anything_is_immediate(
    shared: Factory,
) -> None:
    logs = logs_of(shared)
    began = time.monotonic()
    await logs.close()
    assert time.monotonic() - began < 1.5  # not the close timeout


async def test_a_remade_subscription_asks_for_the_claims_to_be_checked_again(
    shared: Factory,
) -> None:
    logs = logs_of(shared)
    claims: list[tuple[str, int]] = []
    listening = asyncio.ensure_future(logs.listen(lambda rid: None, lambda *c: claims.append(c)))
    try:
        await until(lambda: claims != [])
        assert claims == [("", 0)]  # subscribed: announcements may have been missed
        await logs.client.publish(logs.readers, f"{RID} 7")
        await until(lambda: len(claims) == 2)
        assert claims[1] == (RID, 7)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_a_guest_waiting_in_line_keeps_its_log_alive_at_each_heartbeat(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, max_concurrent=1, heartbeat_sec=0.1, resume_grace_sec=5)
    running = await a.submit("running")
    a.resumable(running)
    waiting = await a.submit("waiting")
    a.resumable(waiting)  # nothing new to say while it waits: only heartbeats
    logs = admission(a).logs
    key = f"{logs.tag}:log:{waiting.request_id}"
    for _ in range(200):
        if await logs.client.exists(key):  # its queued event is written
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the waiting guest's log was never written")
    await logs.client.pexpire(key, 2000)
    await asyncio.sleep(0.3)  # a few heartbeats
    assert await logs.client.pttl(key) > 10_000
    flow.release.set()
