"""Loops on Redis stop when cancelled, even when redis-py swallows the cancel.

redis-py sends each command under ``asyncio.wait_for``; on Python 3.11 a cancel that
lands just as the command completes is dropped and the command's reply comes back
instead. A loop that goes on after that never stops: these tests hand the loops exactly
that, deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from guest_queue.core.backends.redis import logs as logs_module
from guest_queue.core.events import Event

from .conftest import Factory, admission, listening, until
from .test_redis_resume import Held, SharedReader, started


def swallowing(reply: Any, entered: asyncio.Event) -> Any:
    """A Redis command that never answers; the first cancel it gets, it swallows and
    returns ``reply`` (as redis-py does when the cancel lands as the reply arrives)."""
    swallowed = False

    async def command(*args: Any, **kwargs: Any) -> Any:
        nonlocal swallowed
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
            return reply
        raise AssertionError("unreachable")

    return command


class Pipeline:
    """A Redis pipeline that queues any command and runs ``execute`` for the batch."""

    def __init__(self, execute: Any) -> None:
        self.execute = execute

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None  # xadd, pexpire, set: queued


async def writing_through(
    monkeypatch: pytest.MonkeyPatch, logs: Any, execute: Any, entered: asyncio.Event
) -> None:
    """Make the log writer send its batches through ``execute``; wait until one is sent."""
    monkeypatch.setattr(logs.client, "pipeline", lambda **kwargs: Pipeline(execute))
    logs.append("request", 1, Event("answer_chunk", "text"))
    await asyncio.wait_for(entered.wait(), 2)


async def test_a_reader_elsewhere_stops_when_its_cancel_is_swallowed_mid_renewal(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=0.3), shared(flow, resume_grace_sec=0.3)
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b)
    logs = b.resumes.shared
    assert logs is not None
    remote = SharedReader(b, ticket.request_id, first.seqs[-1], claims=True)
    await asyncio.sleep(0.3)  # attached and claimed: it renews its claim as it reads
    entered = asyncio.Event()
    logs.renew = swallowing(True, entered)  # type: ignore[method-assign]
    await asyncio.wait_for(entered.wait(), 3)
    remote.task.cancel()  # the guest on b left
    try:
        done, _ = await asyncio.wait((remote.task,), timeout=1)
        assert done, "the reader went on after it was cancelled (and kept the request alive)"
    finally:
        remote.task.cancel()  # a second cancel goes through
        await asyncio.gather(remote.task, return_exceptions=True)
    # Nobody reads it any more: it ends one grace later, as for any guest who left.
    await until(lambda: a.status()["cancelled_requests"] == 1, timeout=3)


async def test_closing_stops_a_log_writer_whose_cancel_is_swallowed_mid_write(
    shared: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs_module, "CLOSE_TIMEOUT_SEC", 0.2)
    manager = shared(Held())
    logs = admission(manager).logs
    entered = asyncio.Event()

    await writing_through(monkeypatch, logs, swallowing([], entered), entered)
    # Private: the writer task is what must end; nothing public shows it.
    writer = logs._writer
    assert writer is not None
    # The write never finishes: close gives up on it after its bound and cancels the writer,
    # which stops (no task is left behind) though its cancel was swallowed.
    closing = asyncio.ensure_future(logs.close())
    try:
        done, _ = await asyncio.wait((closing,), timeout=1.5)  # its bounds: 0.2 s twice
        assert done, "close() waits for ever on a writer that shrugged off its cancel"
        assert writer.done()
    finally:
        closing.cancel()  # (cancels the writer too, which it awaits)
        await asyncio.gather(closing, writer, return_exceptions=True)


async def test_closing_is_bounded_when_the_log_writer_shrugs_off_every_cancel(
    shared: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs_module, "CLOSE_TIMEOUT_SEC", 0.2)
    manager = shared(Held())
    logs = admission(manager).logs
    entered, let_go = asyncio.Event(), asyncio.Event()

    async def deaf(*args: Any, **kwargs: Any) -> list[Any]:
        entered.set()
        while not let_go.is_set():  # every cancel swallowed until the test lets it go
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        return []

    await writing_through(monkeypatch, logs, deaf, entered)
    closing = asyncio.ensure_future(logs.close())
    try:
        done, _ = await asyncio.wait((closing,), timeout=1.5)  # its bounds: 0.2 s twice
        assert done, "close() waits for ever on a writer that never stops"
    finally:
        let_go.set()
        await asyncio.gather(closing, return_exceptions=True)
        # Private: the writer task left by the failing close, stopped here.
        if logs._writer is not None:
            logs._writer.cancel()
            await asyncio.gather(logs._writer, return_exceptions=True)
