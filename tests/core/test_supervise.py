"""Background loops that fail are logged and restarted, not lost."""

from __future__ import annotations

import logging

import pytest

from guest_queue.core.backends.local import LocalAdmission

from .conftest import GateWorkflow, Stream, make_manager, until


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
