"""The queue manager at its edges: what a refused guest, the status page and the log say,
what the history keeps of an arrival, and what a drain hands on."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from guest_queue.core import availability
from guest_queue.core.answers.cache import CachedAnswer
from guest_queue.core.config import QueueConfig
from guest_queue.core.errors import ClientLimited, Unavailable
from guest_queue.core.manager import QueueManager

from .conftest import Factory, GateWorkflow, Stream, make_manager, until
from .test_answer_cache import MemoryCache, make
from .test_resume import Reader

RESTARTED = "Background task {!r} stopped by itself; restarting it"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


class CountingCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def get(self, key: str) -> CachedAnswer | None:
        self.lookups += 1
        return await super().get(key)


class Down:
    """A workflow whose service says it is down."""

    async def stream(self, request: Any) -> Any:
        yield "never asked"

    async def is_available(self) -> bool:
        return False


async def test_a_client_at_its_cap_is_refused_before_the_cache_is_asked(
    gate: GateWorkflow,
) -> None:
    cache = CountingCache()
    manager = make(gate, cache, max_concurrent=1, max_per_client=1)
    first = Stream(manager, await manager.submit("first", client_hint="flooder"))
    lookups = cache.lookups
    with pytest.raises(ClientLimited) as refused:
        await manager.submit("second", client_hint="flooder")
    assert str(refused.value) == (
        "You already have 1 question open; please wait for an answer before asking more."
    )
    # A flooding client costs no cache lookup (a Redis round trip in production).
    assert cache.lookups == lookups
    assert manager.status()["rejected_client_limit"] == 1
    gate.open(first.ticket.request_id)
    await first.done()
    await manager.close()


@pytest.mark.parametrize(("period", "retry_after"), [(0.0, 1), (2.5, 3)])
async def test_a_workflow_that_is_down_is_a_503_to_come_back_after_the_probe_period(
    period: float, retry_after: int
) -> None:
    manager = make_manager(Down(), availability_cache_sec=period)
    with pytest.raises(Unavailable) as refused:
        await manager.submit("anyone there?")
    assert str(refused.value) == "The assistant is temporarily unavailable."
    assert refused.value.retry_after == retry_after
    assert manager.status()["rejected_requests"] == 1
    await manager.close()


async def test_the_status_says_whether_the_queue_still_accepts_guests(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    manager.start()
    assert manager.status()["accepting"] is True
    manager.begin_drain()
    await until(lambda: manager.status()["accepting"] is False)
    await manager.close()


async def test_the_history_keeps_where_each_guest_arrived_in_line(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    streams = [Stream(manager, await manager.submit(f"q{i}")) for i in range(3)]
    await until(lambda: gate.started == ["q0"])
    # The first started at once (first in line); the others arrived 1st and 2nd in line.
    assert [s.ticket.record.arrival_position for s in streams] == [1, 1, 2]
    for stream in streams:
        gate.open(stream.ticket.request_id)
    for stream in streams:
        await stream.done()
    await manager.close()


async def test_an_answer_to_a_follow_up_is_never_kept_in_the_cache(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache, max_concurrent=1)
    turns = (("user", "What is a gene?"), ("assistant", "A stretch of DNA."))
    follow_up = Stream(manager, await manager.submit("And a genome?", history=turns))
    await until(lambda: gate.started == ["And a genome?"])
    gate.open(follow_up.ticket.request_id)
    assert (await follow_up.done())[-1] == "workflow_complete"
    plain = Stream(manager, await manager.submit("Q"))
    gate.open(plain.ticket.request_id)
    await plain.done()
    # Only the question asked without history is kept: an answer in context is not
    # an answer to the bare words, under any key.
    await until(lambda: len(cache.data) == 1)
    await asyncio.sleep(0.05)
    assert len(cache.data) == 1
    await manager.close()


async def test_the_unclaimed_ticket_sweep_looks_at_least_every_five_seconds(
    gate: GateWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recording(delay: float, *args: Any) -> Any:
        waits.append(delay)
        return await real_sleep(min(delay, 0.01), *args)

    manager = make_manager(gate, unclaimed_ticket_sec=60)
    monkeypatch.setattr(asyncio, "sleep", recording)
    manager.start()
    await until(lambda: len(waits) >= 3)
    monkeypatch.undo()
    # A guest who never came for the answer is let go 60 to 65 s after asking.
    assert 5.0 in waits and max(waits) == 5.0
    await manager.close()


async def test_background_loops_that_stop_by_themselves_are_named_in_the_log(
    redis_test_url: str, redis_test_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"url": redis_test_url, "prefix": redis_test_prefix, "lease_sec": 1.5}
    config = QueueConfig(backend="redis", backend_options=options, shutdown_grace_sec=0)
    manager = QueueManager(config, GateWorkflow(), cache=MemoryCache())
    assert manager.resumes.shared is not None and manager.relay is not None
    stopped: list[str] = []

    def returns_at_once(name: str, real: Any) -> Any:
        async def loop(*args: Any) -> None:
            if name not in stopped:
                stopped.append(name)
                return  # a bug: the loop ends without an error
            await real(*args)

        return loop

    manager._release_unclaimed = returns_at_once("sweep", manager._release_unclaimed)  # type: ignore[method-assign]
    shared_logs = manager.resumes.shared
    shared_logs.listen = returns_at_once("listener", shared_logs.listen)  # type: ignore[method-assign]
    manager.relay.run = returns_at_once("relay", manager.relay.run)  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="guest_queue"):
            manager.start()
            await until(lambda: len(stopped) == 3, timeout=3)
            await asyncio.sleep(0.05)
        assert sorted(errors(caplog)) == [
            RESTARTED.format(name)
            for name in ("answer relay", "cancel and reader listener", "unclaimed-ticket sweep")
        ]
    finally:
        await asyncio.wait_for(manager.close(), 10)


async def test_a_drain_that_hands_off_guests_says_how_many_and_counts_them_no_more(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = shared(gate, max_concurrent=2, shutdown_grace_sec=5, resume_grace_sec=10)
    shared(gate, max_concurrent=2, resume_grace_sec=10)  # a live process to hand them to
    running = [await a.submit(f"running {i}") for i in range(2)]
    for ticket in running:
        Reader(a, a.resumable(ticket))
    await until(lambda: len(gate.started) == 2)
    waiting = [await a.submit(f"waiting {i}") for i in range(2)]
    readers = [Reader(a, a.resumable(t)) for t in waiting]
    await until(lambda: all(r.names == ["queued"] for r in readers))
    assert a.status()["total_requests"] == 4
    with caplog.at_level(logging.INFO, logger="guest_queue"):
        a.begin_drain()
        for reader in readers:
            assert (await reader.done())[-1] == "reconnect"
    # The adopting process counts the two handed off; this one only what it ran.
    assert a.status()["total_requests"] == 2
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "2 waiting request(s) left to the other processes" in infos
    for ticket in running:
        gate.open(ticket.request_id)


async def test_a_drain_hands_off_a_resumable_follower_of_a_plain_waiting_leader(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    shared(gate, max_concurrent=1, resume_grace_sec=10)  # a live process to hand it to
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    leader = Stream(a, await a.submit("Q"))  # a plain stream: nothing to hand off
    follower = await a.submit("Q")
    assert follower.share.leader is leader.ticket
    reader = Reader(a, a.resumable(follower))
    await until(lambda: reader.names == ["queued"] and leader.names == ["queued"])
    a.begin_drain()
    # The only request to hand off is a follower: it is handed off all the same.
    assert (await reader.done())[-1] == "reconnect"
    assert (await leader.done())[-1] == "error"
    assert leader.events[-1].data["code"] == "shutting_down"
    gate.open(running.request_id)


async def test_a_probe_that_never_answers_counts_as_down_after_its_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Hanging(Down):
        async def is_available(self) -> bool:
            await asyncio.Event().wait()
            return True

    monkeypatch.setattr(availability, "PROBE_TIMEOUT_SEC", 0.1)
    manager = make_manager(Hanging())
    with pytest.raises(Unavailable):
        await asyncio.wait_for(manager.submit("anyone there?"), 2)
    assert [r.getMessage() for r in caplog.records] == ["Workflow availability probe failed"]
    await manager.close()


async def test_a_drain_ends_what_still_runs_at_the_end_of_its_grace_at_once(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, shutdown_grace_sec=0)
    stream = Stream(manager, await manager.submit("still running"))
    await until(lambda: gate.started == ["still running"])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(manager.close(), 5)
    # Told at once, and the drain over in a moment (its only pause: 50 ms for the streams).
    assert loop.time() - began < 0.8
    assert (await stream.done())[-1] == "error"
    assert stream.events[-1].data["code"] == "shutting_down"
