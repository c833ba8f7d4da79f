"""Closing a process on a shared queue: what it gives back to Redis, what it leaves behind,
and that shutdown neither hangs nor fails when Redis is slow, down or misbehaving."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from guest_queue.core.backends.redis import admission as admission_module
from guest_queue.core.backends.redis import link as link_module
from guest_queue.core.backends.redis import logs as logs_module
from guest_queue.core.backends.redis.link import RedisLink, RedisOptions
from guest_queue.core.errors import Unavailable

from ..services import closed_port
from .conftest import Factory, GateWorkflow, Stream, admission, until
from .test_redis_log_writer import RID, chunk, written
from .test_redis_resume import Held

NOT_HANDED_BACK = "Could not hand the queue's slots back to Redis; their leases will run out"


def close_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "hand the queue's slots back" in r.getMessage().lower()
    ]


async def forever(*args: Any, **kwargs: Any) -> Any:
    """A Redis command that never answers."""
    await asyncio.Event().wait()


async def test_closing_gives_back_slots_whose_leave_failed_and_leaves_nothing_behind(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Long leases: only what the closing process gives back can let the next guest in.
    a = shared(gate, max_concurrent=1, lease_sec=30)
    b = shared(gate, max_concurrent=1, lease_sec=30)
    running = Stream(a, await a.submit("r0"))
    await until(lambda: gate.started == ["r0"])
    waiting = Stream(b, await b.submit("r1"))
    adm = admission(a)
    real_run = adm.link.run

    async def leaves_fail(script: Any, keys: list[str], args: list[Any]) -> Any:
        # Private: the backend's Lua scripts are its own; failing only the leave needs its identity.
        if script is adm._leave:
            raise Unavailable("Redis hiccup", 1)
        return await real_run(script, keys, args)

    adm.link.run = leaves_fail  # type: ignore[method-assign]
    gate.open(running.ticket.request_id)
    await running.done()
    # Private: the leaves to retry show nowhere public until they succeed.
    await until(lambda: running.ticket.request_id in adm._leaving)
    process_key = adm.process_key
    assert await admission(b).client.exists(process_key) == 1
    await asyncio.sleep(0.1)
    assert gate.started == ["r0"]  # its slot was not given back yet
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        await asyncio.wait_for(a.close(), 5)
    # The closing process gave the slot back: the other process's guest starts at once.
    await until(lambda: gate.started == ["r0", "r1"], timeout=2)
    assert close_warnings(caplog) == []
    # Nothing of the closed process is left in Redis.
    assert await admission(b).client.exists(process_key) == 0
    gate.open(waiting.ticket.request_id)
    assert (await waiting.done())[-1] == "workflow_complete"


async def test_closing_twice_with_redis_down_warns_once(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = shared(GateWorkflow(), redis_url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=1.2)
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        await asyncio.wait_for(down.close(), 5)
        await asyncio.wait_for(down.close(), 5)
    assert close_warnings(caplog) == [NOT_HANDED_BACK]


async def test_closing_does_not_hang_on_a_redis_that_stops_answering(
    shared: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(admission_module, "CLOSE_TIMEOUT_SEC", 0.1)
    manager = shared(GateWorkflow())
    monkeypatch.setattr(admission(manager).client, "zrem", forever)
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        await asyncio.wait_for(manager.close(), 3)
    assert close_warnings(caplog) == [NOT_HANDED_BACK]


async def test_closing_the_link_neither_fails_nor_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "CLOSE_TIMEOUT_SEC", 0.1)
    link = RedisLink(RedisOptions(url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=2.5))
    # Private: the pub/sub connection has no public handle.
    closers = link.client.aclose, link._events.aclose

    async def broken() -> None:
        raise RedisConnectionError("Connection reset by peer.")

    monkeypatch.setattr(link.client, "aclose", broken)
    monkeypatch.setattr(link._events, "aclose", forever)
    try:
        await asyncio.wait_for(link.aclose(), 2)
    finally:
        for close in closers:
            await close()


async def test_closing_the_logs_writes_what_is_pending_promptly(
    shared: Factory,
) -> None:
    logs = admission(shared(Held())).logs
    for seq in range(1, 6):
        logs.append(RID, seq, chunk(seq))
    started = time.monotonic()
    await asyncio.wait_for(logs.close(), 3)
    assert time.monotonic() - started < 0.8  # not a poll of a second, nor the whole timeout
    assert await written(logs) == [1, 2, 3, 4, 5]


async def test_closing_the_logs_gives_up_on_a_stuck_writer(
    shared: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs_module, "CLOSE_TIMEOUT_SEC", 0.1)
    logs = admission(shared(Held())).logs
    real = logs.client.pipeline

    def stuck(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        pipe.execute = forever  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(logs.client, "pipeline", stuck)
    logs.append(RID, 1, chunk(1))
    await asyncio.wait_for(logs.close(), 2)
    # Private: the writer task is the leak this checks for; nothing public shows it.
    assert logs._writer is not None and logs._writer.done()
