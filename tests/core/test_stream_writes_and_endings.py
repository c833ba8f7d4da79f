"""How a stream's events are grouped into writes, and how its request ends (records, logs)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from guest_queue.core import events as ev
from guest_queue.core.backends.base import Ticket
from guest_queue.core.consume import sse_stream
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import RequestRecord, Status
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

from .conftest import GateWorkflow, Stream, make_manager, until
from .test_answer_cache import MemoryCache, make


class Writes:
    """The SSE writes of one request, each as the list of event names it carries."""

    def __init__(self, manager: QueueManager, ticket: Ticket) -> None:
        self.raw: list[bytes] = []
        self._gen = sse_stream(manager, ticket)
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for chunk in self._gen:
            self.raw.append(chunk)

    @property
    def names(self) -> list[list[str]]:
        return [
            [json.loads(part[len(b"data: ") :])["event"] for part in w.split(b"\n\n") if part]
            for w in self.raw
        ]

    def data(self, name: str) -> object:
        for w in self.raw:
            for part in w.split(b"\n\n"):
                if part:
                    message = json.loads(part[len(b"data: ") :])
                    if message["event"] == name:
                        return message["data"]
        raise AssertionError(f"no {name} event")


async def test_a_guest_admitted_at_once_gets_queued_and_processing_in_one_write(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate)
    ticket = await manager.submit("q")
    writes = Writes(manager, ticket)
    await until(lambda: gate.started)
    assert writes.names[0] == ["queued", "processing"]
    # ``processing`` says how long the guest waited, exactly as the record has it.
    assert writes.data("processing") == {"waited_ms": ticket.record.wait_ms}
    gate.open(ticket.request_id)
    await asyncio.wait_for(writes.task, 5)
    await manager.close()


async def test_a_waiting_guest_is_told_its_place_at_once(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, heartbeat_sec=30)
    head = Stream(manager, await manager.submit("head"))
    await until(lambda: gate.started)
    waiter = await manager.submit("waiter")
    writes = Writes(manager, waiter)
    # Its ``queued`` goes out on its own, not held back until it is let in.
    await until(lambda: writes.names == [["queued"]], timeout=1)
    gate.open(head.ticket.request_id)
    await head.done()
    await until(lambda: gate.started == ["head", "waiter"])
    gate.open(waiter.request_id)
    await asyncio.wait_for(writes.task, 5)
    assert writes.names[0] == ["queued"]
    assert writes.data("processing") == {"waited_ms": waiter.record.wait_ms}
    await manager.close()


async def test_a_cache_hit_goes_out_in_one_write(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache)
    first = Stream(manager, await manager.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    gate.open(first.ticket.request_id)
    await first.done()
    await until(lambda: cache.data)
    writes = Writes(manager, await manager.submit("Q"))
    await asyncio.wait_for(writes.task, 5)
    assert writes.names == [["queued", "processing", "answer_chunk", "workflow_complete"]]
    await manager.close()


async def test_a_guest_who_leaves_is_recorded_as_gone(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    stream = Stream(manager, await manager.submit("q"))
    await until(lambda: "answer_chunk" in stream.names)
    await stream.disconnect()
    record = stream.ticket.record
    assert record.status is Status.CANCELLED
    assert (record.error_code, record.error_message) == (
        "client_disconnected",
        "The client went away.",
    )
    await manager.close()


async def test_only_a_processing_timeout_adds_the_fallback_to_the_answer(
    gate: GateWorkflow,
) -> None:
    fallback = "Sorry, that took too long."
    manager = make_manager(
        gate,
        max_concurrent=1,
        request_timeout_sec=0.3,
        max_queue_wait_sec=0.1,
        timeout_fallback=fallback,
    )
    slow = Stream(manager, await manager.submit("slow"))
    waiter = Stream(manager, await manager.submit("waiter"))
    assert (await waiter.done())[-1] == ev.TIMEOUT  # timed out in line: no answer at all
    assert waiter.ticket.record.answer_preview == ""
    assert (await slow.done())[-1] == ev.TIMEOUT
    assert slow.ticket.record.answer_preview == "slow-0 slow-1 " + fallback
    done = Stream(manager, await manager.submit("done"))
    await until(lambda: "answer_chunk" in done.names)
    gate.open(done.ticket.request_id)
    assert (await done.done())[-1] == ev.WORKFLOW_COMPLETE
    assert done.ticket.record.answer_preview == "done-0 done-1 "
    await manager.close()


async def test_a_failing_listener_is_logged_with_its_traceback(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(gate)

    def failing(record: RequestRecord) -> None:
        raise RuntimeError("broken listener")

    manager.add_listener(failing)
    ticket = await manager.submit("q")
    gate.open(ticket.request_id)
    async for _ in manager.events(ticket):
        pass
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["Request listener failed"]
    assert errors[0].exc_info is not None
    await manager.close()


async def test_a_workflow_that_will_not_stop_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from guest_queue.core import stopping

    monkeypatch.setattr(stopping, "STOP_GRACE_SEC", 0.1)
    let_go = asyncio.Event()

    class Deaf:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "chunk "
            while not let_go.is_set():
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    if let_go.is_set():
                        raise

    manager = make_manager(Deaf(), max_concurrent=1)
    try:
        stream = Stream(manager, await manager.submit("deaf"))
        await until(lambda: "answer_chunk" in stream.names)
        await stream.disconnect()
        await until(lambda: any(r.levelno == logging.WARNING for r in caplog.records), timeout=2)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            f"Workflow for request {stream.ticket.request_id} still running 0.1 s after it was "
            "stopped; its slot is given back"
        ]
    finally:
        let_go.set()
        await asyncio.wait_for(manager.close(), 3)


async def test_a_wait_ending_exactly_at_a_heartbeat_ends_without_one(
    gate: GateWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the line's limit and the next heartbeat fall due together, the guest times out."""
    from types import SimpleNamespace

    from guest_queue.core import stream as stream_module

    manager = make_manager(gate, max_concurrent=1, max_queue_wait_sec=1.0, heartbeat_sec=0.25)
    head = Stream(manager, await manager.submit("head"))
    await until(lambda: gate.started)
    ticket = await manager.submit("waiter")
    deadline = ticket.record.created_mono + 1.0
    # A clock read exactly 0.25 s (one heartbeat) before the limit: no rounding on the way.
    monkeypatch.setattr(stream_module, "time", SimpleNamespace(monotonic=lambda: deadline - 0.25))
    waiter = Stream(manager, ticket)
    try:
        assert (await waiter.done(timeout=2))[-1] == ev.TIMEOUT
        assert waiter.heartbeats == 0
    finally:
        monkeypatch.undo()
        await waiter.disconnect()
        gate.open(head.ticket.request_id)
        await head.done()
        await manager.close()
