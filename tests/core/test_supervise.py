"""Background loops that fail are logged and restarted, not lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from guest_queue.core.backends.local import LocalAdmission
from guest_queue.core.config import QueueConfig
from guest_queue.core.manager import QueueManager
from guest_queue.core.supervise import supervised

from .conftest import GateWorkflow, Stream, make_manager, until
from .test_answer_cache import MemoryCache


async def test_a_failing_position_pass_is_logged_and_the_loop_restarted(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(gate, max_concurrent=1)
    first = Stream(manager, await manager.submit("a"))
    waiters = [Stream(manager, await manager.submit(f"w{i}")) for i in range(2)]
    await until(lambda: all(w.events for w in waiters))
    local = manager.admission
    assert isinstance(local, LocalAdmission)
    real = local.update_positions
    failures = [RuntimeError("a bug in the position pass")]

    def flaky() -> int:
        if failures:
            raise failures.pop()
        return real()

    local.update_positions = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="guest_queue"):
        gate.open(first.ticket.request_id)
        await first.done()
        await until(lambda: waiters[1].positions() == [2, 1])
    assert not failures
    assert "'queue admission' died; restarting" in caplog.text
    for waiter in waiters:
        gate.open(waiter.ticket.request_id)
    await waiters[1].done()
    await manager.close()


async def test_a_cancellation_turned_into_another_error_still_stops_the_loop() -> None:
    runs = 0

    async def swallows_cancellation() -> None:
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("the client library's own error") from None

    task = asyncio.create_task(supervised("swallower", swallows_cancellation))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)
    assert runs == 1


async def test_close_stops_a_task_that_swallowed_its_first_cancel(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    manager.start()
    stopped = asyncio.Event()

    async def stubborn() -> None:
        # A library that turns the cancel into a quiet return, then reads again.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    manager.stopper.spawn(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(manager.close(), 5)
    assert stopped.is_set()


async def test_close_warns_of_a_background_task_that_shrugs_off_every_cancel(
    gate: GateWorkflow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from guest_queue.core import stopping

    monkeypatch.setattr(stopping, "CLOSE_CANCEL_WAIT_SEC", 0.05)
    manager = make_manager(gate)
    manager.start()
    let_go = asyncio.Event()

    async def deaf() -> None:
        while not let_go.is_set():  # every cancel swallowed until the test lets it go
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = manager.stopper.spawn(deaf())
    try:
        await asyncio.wait_for(manager.close(), 2)
    finally:
        let_go.set()
        await asyncio.wait_for(task, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["1 background task(s) did not stop when cancelled"]


async def test_a_failing_closer_is_logged_with_its_traceback_and_the_next_still_runs(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(gate)
    closed: list[str] = []

    async def failing() -> None:
        raise RuntimeError("the flush failed")

    async def next_closer() -> None:
        closed.append("next")

    manager.add_closer(failing)
    manager.add_closer(next_closer)
    await asyncio.wait_for(manager.close(), 2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"Closing {failing!r} failed"]
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], RuntimeError)
    assert closed == ["next"]


RESTARTED = "Background task {!r} stopped by itself; restarting it"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


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

    live = manager.live
    live.release_unclaimed = returns_at_once("sweep", live.release_unclaimed)  # type: ignore[method-assign]
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
