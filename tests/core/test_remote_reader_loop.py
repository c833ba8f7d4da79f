"""The remote reader's loop (a resume on a process that does not drive the request), against
an in-memory shared log: keep-alives, claim renewals, the dead-process check, Redis failing,
and newer readers on the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from guest_queue.core import resume
from guest_queue.core.config import QueueConfig
from guest_queue.core.events import HEARTBEAT_BYTES, Event
from guest_queue.core.resume import Resumes, read_shared

RID = "r1"
QUEUED = b'data: {"event":"queued","data":{"position":1},"request_id":"r1","seq":1}\nid: 1\n\n'
CHUNK = b'data: {"event":"answer_chunk","data":"Hi","request_id":"r1","seq":2}\nid: 2\n\n'
DONE = (
    b'data: {"event":"workflow_complete","data":{"suggested_questions":[]},'
    b'"request_id":"r1","seq":3}\nid: 3\n\n'
)


class MemoryLogs:
    """One shared log and its claims, as Redis keeps them (announcements are not sent:
    as if this process's subscription had dropped)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Event]] = []
        self.changed = asyncio.Event()
        self.newest = 0
        self.held_until = 0.0
        #: Whether the newest claim ever lapsed between two renewals.
        self.lapsed = False
        self.fail_read: Exception | None = None
        self.fail_state: Exception | None = None
        self.unclaimed: list[int] = []

    def append(self, request_id: str, seq: int, event: Event) -> None:
        self.events.append((seq, event))
        self.changed.set()

    def touch(self, request_id: str) -> None:
        pass

    def drop(self, request_id: str) -> None:
        pass

    async def state(self, request_id: str) -> str | None:
        if self.fail_state is not None:
            raise self.fail_state
        return "live"

    async def read(self, request_id: str, after: int, block_sec: float) -> list[tuple[int, Event]]:
        if self.fail_read is not None:
            raise self.fail_read
        if not [e for e in self.events if e[0] > after]:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(block_sec):
                    await self.changed.wait()
        return [e for e in self.events if e[0] > after]

    async def bounds(self, request_id: str) -> tuple[int, int] | None:
        return (self.events[0][0], self.events[-1][0]) if self.events else None

    async def claim(self, request_id: str, ttl_sec: float) -> int:
        self.newest = self.newest + 1000 if self.newest else int(time.time() * 1e6)
        self.held_until = time.monotonic() + ttl_sec
        return self.newest

    async def renew(self, request_id: str, number: int, ttl_sec: float) -> bool:
        if number != self.newest:
            return False
        if time.monotonic() > self.held_until:
            self.lapsed = True
        self.held_until = time.monotonic() + ttl_sec
        return True

    async def unclaim(self, request_id: str, number: int) -> None:
        self.unclaimed.append(number)

    async def newest_claim(self, request_id: str) -> int:
        return self.newest

    async def attached(self, request_id: str) -> bool:
        return time.monotonic() < self.held_until

    async def cancel(self, request_id: str) -> None:
        pass

    async def listen(self, on_cancel: Any, on_claim: Any) -> None:
        await asyncio.Event().wait()


def resumes(
    logs: MemoryLogs, heartbeat_sec: float, spawn: Callable[..., Any] = asyncio.ensure_future
) -> Resumes:
    async def unused(ticket: Any) -> AsyncIterator[Event | None]:
        for _ in ():
            yield None
        raise AssertionError("nothing is driven here")

    return Resumes(QueueConfig(heartbeat_sec=heartbeat_sec), unused, spawn, logs)


class Wire:
    """What a remote reader sends, part by part."""

    def __init__(self, parts: AsyncIterator[bytes]) -> None:
        self.parts: list[bytes] = []
        self.task = asyncio.ensure_future(self._consume(parts))

    async def _consume(self, parts: AsyncIterator[bytes]) -> None:
        async for part in parts:
            self.parts.append(part)

    async def done(self, timeout: float = 3) -> bytes:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return b"".join(self.parts)


def answers(
    *replies: bool, then: Callable[[], None] = lambda: None
) -> Callable[[], Awaitable[bool]]:
    """A liveness check giving ``replies`` in turn (then ``True``), calling ``then`` with the
    last one."""
    left = list(replies)

    async def alive() -> bool:
        if not left:
            return True
        reply = left.pop(0)
        if not left:
            then()
        return reply

    return alive


def started_log() -> MemoryLogs:
    logs = MemoryLogs()
    logs.append(RID, 1, Event("queued", {"position": 1}))
    logs.append(RID, 2, Event("answer_chunk", "Hi"))
    return logs


async def test_a_remote_reader_of_a_request_whose_process_died_is_told_so_in_order() -> None:
    logs = started_log()
    gone = answers(False, False, False)
    wire = Wire(resumes(logs, 0.05).read_remote(RID, 0, with_ids=True, alive=gone))
    # Numbered on from what it has seen, with ids (a resumed stream), after two checks in
    # a row found the request nowhere (the first is followed by a keep-alive).
    error = (
        b'data: {"event":"error","data":{"error":"The server answering this request stopped;'
        b' please ask again.","code":"unavailable"},"request_id":"r1","seq":3}\nid: 3\n\n'
    )
    assert await wire.done() == QUEUED + CHUNK + HEARTBEAT_BYTES + error


async def test_liveness_misses_not_in_a_row_do_not_end_a_remote_reader() -> None:
    logs = started_log()
    # Found nowhere, found, nowhere again (its terminal event was on its way): not dead.
    alive = answers(
        False, True, False, then=lambda: logs.append(RID, 3, Event("workflow_complete", {}))
    )
    wire = Wire(read_shared(logs, RID, 0, with_ids=True, heartbeat=0.05, alive=alive))
    done = b'data: {"event":"workflow_complete","data":{},"request_id":"r1","seq":3}\nid: 3\n\n'
    assert await wire.done() == QUEUED + CHUNK + HEARTBEAT_BYTES * 3 + done


async def test_a_remote_reader_renews_its_claim_in_time_and_keeps_alive_per_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A claim's life shorter than the heartbeat (as 4 s is next to the default 15 s).
    monkeypatch.setattr(resume, "REMOTE_ATTACH_SEC", 0.2)
    logs = started_log()
    wire = Wire(read_shared(logs, RID, 2, with_ids=True, heartbeat=0.5))
    await asyncio.sleep(1.2)
    assert not wire.task.done()
    logs.append(RID, 3, Event("workflow_complete", {"suggested_questions": []}))
    sent = await wire.done()
    # One keep-alive about every 0.5 s (not one per renewal, every 0.1 s).
    assert sent.endswith(DONE) and sent.removesuffix(DONE).count(HEARTBEAT_BYTES) in (1, 2, 3)
    assert sent.removesuffix(DONE).replace(HEARTBEAT_BYTES, b"") == b""
    assert not logs.lapsed  # the driving process never saw it unread


async def test_redis_failing_under_a_remote_reader_ends_it_with_a_warning_naming_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "guest_queue")
    logs = started_log()
    logs.fail_state = ConnectionError("down")
    wire = Wire(read_shared(logs, RID, 2, with_ids=True, heartbeat=0.05))
    assert await wire.done() == b""  # the client resumes elsewhere
    logs.fail_read = ConnectionError("refused")
    wire = Wire(read_shared(logs, RID, 2, with_ids=True, heartbeat=0.05))
    assert await wire.done() == b""
    assert [r.getMessage() for r in caplog.records] == [
        "Asking Redis for request r1's log failed (down)",
        "Reading request r1's log from Redis failed (refused)",
    ]


async def test_each_newer_reader_on_the_same_process_closes_the_older_one_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "guest_queue")
    logs = started_log()
    here = resumes(logs, 5.0)
    wires = []
    for _ in range(3):
        wires.append(Wire(here.read_remote(RID, 2, with_ids=True)))
        await asyncio.sleep(0.05)  # it has claimed the request
        if len(wires) > 1:
            # Without waiting for an announcement from Redis nor for a renewal.
            assert await wires[-2].done(timeout=0.5) == b""
    assert not wires[-1].task.done()
    logs.append(RID, 3, Event("workflow_complete", {"suggested_questions": []}))
    assert await wires[-1].done() == DONE
    assert here.remote == {}
    assert caplog.records == []  # being replaced is no failure to warn of


async def test_redis_failing_as_a_remote_reader_gives_up_its_claim_is_no_error() -> None:
    logs = started_log()
    spawned: list[asyncio.Task[Any]] = []

    def spawn(coro: Any) -> asyncio.Task[Any]:
        spawned.append(asyncio.ensure_future(coro))
        return spawned[-1]

    here = resumes(logs, 5.0, spawn)

    async def refused(request_id: str, number: int) -> None:
        raise ConnectionError("refused")

    logs.unclaim = refused  # type: ignore[method-assign]
    logs.append(RID, 3, Event("workflow_complete", {"suggested_questions": []}))
    assert await Wire(here.read_remote(RID, 2, with_ids=True)).done() == DONE
    assert spawned != []
    await asyncio.wait(spawned)
    # The claim lapses by itself: nothing for the loop to report as a failed task.
    assert [t.exception() for t in spawned] == [None] * len(spawned)
