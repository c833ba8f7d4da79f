"""The shared queue's background loops (the admission listener and the leaves sender):
an operator is told which one failed, a failed or overlapping leave logs no error and is
sent again, and closing waits for the loops to stop, but not forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from guest_queue.core import stopping
from guest_queue.core.backends.redis import admission as admission_module
from guest_queue.core.backends.redis.link import UNREACHABLE
from guest_queue.core.errors import Unavailable

from .conftest import Factory, GateWorkflow, Stream, admission, until


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def one_after_another(manager: Any, gate: GateWorkflow) -> tuple[Stream, Stream]:
    """A running guest and one waiting behind it for its slot (max_concurrent=1)."""
    running = Stream(manager, await manager.submit("running"))
    await until(lambda: gate.started == ["running"])
    waiting = Stream(manager, await manager.submit("waiting"))
    await until(lambda: waiting.ticket.position == 1)
    return running, waiting


async def test_a_listener_that_dies_is_named_in_the_log_and_started_again(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = shared(gate, max_concurrent=1)
    link = admission(manager).link
    real_listen = link.listen
    calls = 0

    async def fails_once(channel: str, on_message: Callable[[str], None]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the listener")
        await real_listen(channel, on_message)

    # Replaced before the queue's background work starts its helpers.
    link.listen = fails_once  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="guest_queue"):
        await until(lambda: calls == 2, timeout=3)
    assert errors(caplog) == ["Background task 'redis listener' died; restarting it"]
    # Listening again: a guest behind a running one starts when its slot frees up.
    running, waiting = await one_after_another(manager, gate)
    gate.open(running.ticket.request_id)
    await until(lambda: gate.started == ["running", "waiting"])
    gate.open(waiting.ticket.request_id)
    assert (await waiting.done())[-1] == "workflow_complete"


def fail_the_next_leave(adm: Any, error: Exception) -> list[Exception]:
    """Make the next LEAVE script raise ``error``; the list empties once it has."""
    real_run = adm.link.run
    failures = [error]

    async def run(script: Any, keys: list[str], args: list[Any]) -> Any:
        # Private: the backend's Lua scripts are its own; failing only the leave needs its identity.
        if script is adm._leave and failures:
            raise failures.pop()
        return await real_run(script, keys, args)

    adm.link.run = run
    return failures


async def test_a_leaves_sender_that_dies_is_named_in_the_log_and_the_slot_still_given_back(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = shared(gate, max_concurrent=1)
    adm = admission(manager)
    running, waiting = await one_after_another(manager, gate)
    failures = fail_the_next_leave(adm, RuntimeError("a bug in the leave"))
    with caplog.at_level(logging.ERROR, logger="guest_queue"):
        gate.open(running.ticket.request_id)
        await running.done()
        await until(lambda: gate.started == ["running", "waiting"], timeout=3)
    assert not failures
    assert errors(caplog) == ["Background task 'redis leaves' died; restarting it"]
    gate.open(waiting.ticket.request_id)
    assert (await waiting.done())[-1] == "workflow_complete"


async def test_a_leave_redis_did_not_get_is_sent_again_without_an_error_logged(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = shared(gate, max_concurrent=1)
    adm = admission(manager)
    running, waiting = await one_after_another(manager, gate)
    failures = fail_the_next_leave(adm, Unavailable(UNREACHABLE, 1))
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        gate.open(running.ticket.request_id)
        await running.done()
        # Sent again with the next renewal pass (every 0.5 s): the next guest starts.
        await until(lambda: gate.started == ["running", "waiting"], timeout=3)
        gate.open(waiting.ticket.request_id)
        assert (await waiting.done())[-1] == "workflow_complete"
        # Private: the leaves to retry show nowhere public until they succeed.
        await until(lambda: not adm._leaving)
        await asyncio.sleep(0.6)  # a loop that stopped would be restarted, and say so, by now
    assert not failures
    assert errors(caplog) == []


async def test_a_leave_slower_than_a_renewal_pass_logs_no_error(
    shared: Factory,
    gate: GateWorkflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Renewals every 0.3 s: one comes (and asks for the leaves again) while a leave is slow.
    manager = shared(gate, max_concurrent=1, lease_sec=0.9)
    adm = admission(manager)
    running, waiting = await one_after_another(manager, gate)
    real_run = adm.link.run
    slow = 0

    async def slow_leaves(script: Any, keys: list[str], args: list[Any]) -> Any:
        nonlocal slow
        # Private: the backend's Lua scripts are its own; slowing only the leave needs its identity.
        if script is adm._leave:
            slow += 1
            await asyncio.sleep(0.35)
        return await real_run(script, keys, args)

    adm.link.run = slow_leaves  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        gate.open(running.ticket.request_id)
        await running.done()
        await until(lambda: gate.started == ["running", "waiting"], timeout=3)
        gate.open(waiting.ticket.request_id)
        assert (await waiting.done())[-1] == "workflow_complete"
        # Private: the leaves to retry show nowhere public until they succeed.
        await until(lambda: not adm._leaving)
        await asyncio.sleep(0.6)  # a loop that stopped would be restarted, and say so, by now
    assert slow >= 1
    assert errors(caplog) == []
    # The figures the leave's reply brought are this process's: nothing waiting, nothing run.
    assert (adm.queue_size, adm.active_count) == (0, 0)


async def test_closing_waits_for_the_listener_to_stop_before_closing_the_connections(
    shared: Factory,
) -> None:
    manager = shared(GateWorkflow())
    link = admission(manager).link
    order: list[str] = []

    async def slow_to_stop(channel: str, on_message: Callable[[str], None]) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.2)  # unsubscribing, say
            order.append("listener stopped")

    real_aclose = link.aclose

    async def aclose() -> None:
        order.append("connections closed")
        await real_aclose()

    link.listen = slow_to_stop  # type: ignore[method-assign]
    link.aclose = aclose  # type: ignore[method-assign]
    await until(lambda: len(manager.stopper.background) >= 2)
    await asyncio.sleep(0.1)  # the listener is listening
    await asyncio.wait_for(manager.close(), 5)
    assert order == ["listener stopped", "connections closed"]


async def test_closing_does_not_wait_forever_for_a_listener_that_will_not_stop(
    shared: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admission_module, "CLOSE_TIMEOUT_SEC", 0.1)
    # close() cancels its own tasks again only after this long: far more than 0.1 s.
    monkeypatch.setattr(stopping, "CLOSE_CANCEL_WAIT_SEC", 3.0)
    manager = shared(GateWorkflow())
    link = admission(manager).link
    stubborn: list[asyncio.Task[Any]] = []

    async def ignores_a_cancel(channel: str, on_message: Callable[[str], None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        stubborn.append(task)
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as a library may
            await asyncio.Event().wait()
        await asyncio.Event().wait()

    link.listen = ignores_a_cancel  # type: ignore[method-assign]
    await until(lambda: stubborn)
    started = time.monotonic()
    try:
        await asyncio.wait_for(manager.close(), 10)
        assert time.monotonic() - started < 1.5
    finally:
        for task in stubborn:
            task.cancel()
        await asyncio.gather(*stubborn, return_exceptions=True)
