"""What leaves the core: SSE bytes, the status document of a request, collected answers."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from guest_queue.core import events as ev
from guest_queue.core.answers.cache import CachedAnswer, NearDuplicates
from guest_queue.core.backends.base import Ticket
from guest_queue.core.consume import collect, sse_stream
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import ANSWER_PREVIEW_CHARS, RequestRecord, Status
from guest_queue.core.runner import Channel
from guest_queue.core.stats import QueueStats

from .conftest import GateWorkflow, Stream, make_manager, until
from .test_answer_cache import MemoryCache, make


async def wire(manager: QueueManager, query: str) -> tuple[str, bytes]:
    ticket = await manager.submit(query)
    chunks = [chunk async for chunk in sse_stream(manager, ticket)]
    return ticket.request_id, b"".join(chunks)


def messages(raw: bytes) -> list[dict[str, Any]]:
    parts = [part for part in raw.split(b"\n\n") if part]
    assert all(part.startswith(b"data: ") and b"\n" not in part for part in parts), parts
    return [json.loads(part[len(b"data: ") :]) for part in parts]


async def test_the_sse_bytes_of_a_whole_request() -> None:
    gate = GateWorkflow(chunks=2)
    manager = make_manager(gate)
    ticket = await manager.submit("q")
    gate.open(ticket.request_id)
    raw = b"".join([chunk async for chunk in sse_stream(manager, ticket)])
    assert raw.endswith(b"\n\n")
    sent = messages(raw)
    assert [m["event"] for m in sent] == [
        "queued",
        "processing",
        "answer_chunk",
        "answer_chunk",
        "workflow_complete",
    ]
    assert all(set(m) == {"event", "data", "request_id", "seq"} for m in sent)
    assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]
    assert {m["request_id"] for m in sent} == {ticket.request_id}
    assert [m["data"] for m in sent if m["event"] == "answer_chunk"] == ["q-0 ", "q-1 "]
    # Compact JSON, byte for byte: the frontend and every test client rely on this shape.
    first = raw.split(b"\n\n")[0]
    assert first == (
        b'data: {"event":"queued","data":{"queue_position":1,"queue_size":0,'
        b'"estimated_wait_sec":0.0,"estimated_wait_range_sec":[0.0,0.0]},'
        b'"request_id":"' + ticket.request_id.encode() + b'","seq":1}'
    )


def test_an_event_encodes_as_one_compact_data_line() -> None:
    wire_bytes = ev.Event(ev.ANSWER_CHUNK, "hi").encode("r1", 7)
    line = b'data: {"event":"answer_chunk","data":"hi","request_id":"r1","seq":7}'
    assert wire_bytes == line + b"\n\n"
    # Resumed streams (GET chat/<id>/events) add the seq as the SSE id, after the data.
    assert ev.Event(ev.ANSWER_CHUNK, "hi").encode("r1", 7, with_id=True) == line + b"\nid: 7\n\n"
    assert ev.error_event("internal", "x").data == {"error": "x", "code": "internal"}


def test_every_event_encodes_as_json_dumps_would() -> None:
    # The encoder puts the message together from its parts: the bytes must stay those of
    # json.dumps (ASCII only, compact), whatever a workflow's event and data hold (strict
    # JSON: ``NaN`` and infinities never get this far, see test_workflow_output.py).
    cases: list[tuple[str, Any]] = [
        (ev.ANSWER_CHUNK, 'héllo \u2028 "quoted" \\ \n\t 日本'),
        (ev.ANSWER_CHUNK, ""),
        (ev.QUEUED, {"queue_position": 3, "queue_size": 7, "estimated_wait_sec": 1.5}),
        (ev.WORKFLOW_COMPLETE, {"suggested_questions": ["Why?"], "cached": False}),
        ("sources", [{"title": "é", "score": 0.25}, None, True, 3, 1.7976931348623157e308]),
        ('custom "é"\u2028', {"nested": {"k": [1, 2.5e-10]}}),
        ("number", 12),
    ]
    for name, data in cases:
        for seq in (1, 13, 10**12):
            payload = {"event": name, "data": data, "request_id": "r-é", "seq": seq}
            dumped = b"data: " + json.dumps(payload, separators=(",", ":")).encode()
            assert ev.Event(name, data).encode("r-é", seq) == dumped + b"\n\n"
            with_id = dumped + b"\nid: " + str(seq).encode() + b"\n\n"
            assert ev.Event(name, data).encode("r-é", seq, with_id=True) == with_id


async def test_the_status_document_of_a_request() -> None:
    gate = GateWorkflow(chunks=1)
    manager = make_manager(gate, max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: gate.started == ["head"] and waiter.events)
    waiting = manager.lookup(waiter.ticket.request_id)
    assert waiting is not None
    assert set(waiting) == {
        "request_id",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "wait_ms",
        "processing_ms",
        "cached",
        "queue_position",
    }
    assert waiting["request_id"] == waiter.ticket.request_id
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1
    assert waiting["started_at"] is None and waiting["finished_at"] is None
    assert waiting["wait_ms"] is None and waiting["processing_ms"] is None
    assert waiting["cached"] is False
    datetime.fromisoformat(waiting["created_at"])
    for s in (head, waiter):
        gate.open(s.ticket.request_id)
        await s.done()
    done = manager.lookup(waiter.ticket.request_id)
    assert done is not None and "queue_position" not in done
    assert done["status"] == "completed"
    created, started, finished = (
        datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert isinstance(done["wait_ms"], int) and isinstance(done["processing_ms"], int)


async def test_a_released_request_ends_cancelled_as_a_disconnect() -> None:
    gate = GateWorkflow()
    manager = make_manager(gate)
    ticket = await manager.submit("q")
    manager.release(ticket)
    record = ticket.record
    assert record.status is Status.CANCELLED
    assert record.error_code == "client_disconnected"
    assert record.error_message == "The client went away."
    manager.release(ticket)  # idempotent
    assert manager.status()["cancelled_requests"] == 1


async def test_release_from_another_thread_ends_the_request_on_the_loop() -> None:
    manager = make_manager(GateWorkflow())
    ticket = await manager.submit("q")
    thread = threading.Thread(target=manager.release_threadsafe, args=(ticket,))
    thread.start()
    thread.join()
    await until(lambda: ticket.record.status is Status.CANCELLED)
    assert ticket.record.error_code == "client_disconnected"


async def test_begin_drain_from_another_thread_stops_accepting() -> None:
    gate = GateWorkflow()
    manager = make_manager(gate, shutdown_grace_sec=5)
    head = Stream(manager, await manager.submit("head"))
    await until(lambda: gate.started)
    thread = threading.Thread(target=manager.begin_drain)
    thread.start()
    thread.join()
    await until(lambda: not manager.accepting)
    gate.open(head.ticket.request_id)
    assert (await head.done())[-1] == "workflow_complete"


async def test_collect_gathers_the_answer_and_the_terminal_event() -> None:
    gate = GateWorkflow(chunks=3)
    manager = make_manager(gate, heartbeat_sec=0.02)
    ticket = await manager.submit("q")

    async def open_later() -> None:
        await asyncio.sleep(0.1)  # a few heartbeats first: they are not part of the answer
        gate.open(ticket.request_id)

    opener = asyncio.ensure_future(open_later())
    result = await collect(manager, ticket)
    await opener
    assert result.request_id == ticket.request_id
    assert result.answer == "q-0 q-1 q-2 " and result.chunks == ["q-0 ", "q-1 ", "q-2 "]
    assert result.terminal is not None and result.terminal.name == "workflow_complete"
    assert result.payload == {"suggested_questions": ["more?"], "cached": False}


async def test_collect_of_a_failed_request_keeps_the_error() -> None:
    manager = make_manager(GateWorkflow(), request_timeout_sec=0.1, timeout_fallback="Later.")
    ticket = await manager.submit("q")
    result = await collect(manager, ticket)
    assert result.terminal is not None and result.terminal.name == "timeout"
    assert result.answer.endswith("Later.")
    assert result.payload["timeout_sec"] == 0.1


async def test_a_cached_empty_answer_sends_no_empty_chunk() -> None:
    cache = MemoryCache()
    cache.data["q"] = CachedAnswer("", ("Next?",))
    manager = make(GateWorkflow(), cache)
    hit = Stream(manager, await manager.submit("q"))
    assert await hit.done() == ["queued", "processing", "workflow_complete"]


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    stats = QueueStats()
    stats.processing_ms.add(1001)
    assert stats.retry_after(1, 60) == 2


def test_near_duplicates_match_at_the_threshold_and_forget_the_oldest() -> None:
    near = NearDuplicates(threshold=0.75, size=2)
    near.remember("what is a gene")
    assert near.match("what is a gene") == "what is a gene"
    assert near.match("what is the gene") is None  # 3 of 5 words: 0.6
    assert near.match("what is a gene exactly") == "what is a gene"  # 4 of 5: 0.8
    near.remember("how long do results take")
    near.remember("what is a gene")  # seen again: now the newest
    near.remember("is my data safe")  # evicts the oldest, "how long ..."
    assert near.match("how long do results take") is None
    assert near.match("what is a gene") == "what is a gene"
    assert near.match("is my data safe") == "is my data safe"
    assert near.match("") is None
    best = NearDuplicates(threshold=0.5)
    best.remember("a b c d")
    best.remember("a b c e f")
    assert best.match("a b c d") == "a b c d"  # the most similar, not the first found
    assert best.match("a b c e f") == "a b c e f"
    exact = NearDuplicates(threshold=0.8)
    exact.remember("a b c d e")
    assert exact.match("a b c d") == "a b c d e"  # 4 of 5 words: exactly the threshold
    blank = NearDuplicates(threshold=0.5)
    blank.remember("")
    assert blank.match("") is None  # no words in common, and no division by zero


async def test_a_manager_that_never_started_ignores_thread_calls() -> None:
    """``release_threadsafe`` and ``begin_drain`` before the loop is known (or after it closed)."""
    manager = make_manager(GateWorkflow())
    orphan = Ticket(RequestRecord(request_id="r", query="q"))
    manager.release_threadsafe(orphan)
    manager.begin_drain()
    assert manager.accepting and orphan.record.status is Status.QUEUED
    assert await manager.admission.reachable() is True  # a local queue is always reachable


def test_the_answer_preview_keeps_exactly_the_first_500_characters() -> None:
    record = RequestRecord(request_id="r", query="q")
    record.add_chunk("a" * 498)
    record.add_chunk("b")
    assert record.answer_preview == "a" * 498 + "b"  # chunks add up
    record.add_chunk("cde")  # one character of room left: it is filled
    record.add_answer("f")  # full: nothing more is kept
    assert record.answer_preview == "a" * 498 + "bc"
    assert len(record.answer_preview) == ANSWER_PREVIEW_CHARS == 500


def test_time_to_first_chunk_is_taken_at_the_first_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from guest_queue.core import records

    record = RequestRecord(request_id="r", query="q", created_mono=100.0)
    assert record.first_chunk_ms is None
    # Only the records module's clock: the event loop's own stays real.
    monkeypatch.setattr(records, "time", SimpleNamespace(monotonic=lambda: 100.25))
    record.add_chunk("first ")
    monkeypatch.setattr(records, "time", SimpleNamespace(monotonic=lambda: 103.0))
    record.add_chunk("second")
    assert record.first_chunk_ms == 250


async def test_a_writer_that_stops_waiting_for_room_leaves_the_channel_working() -> None:
    channel = Channel(1)
    channel.put_nowait("first")
    writer = asyncio.ensure_future(channel.put("second"))
    await asyncio.sleep(0)
    assert not writer.done()  # full: the writer waits for room
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    # Its item was never added; the reader gets what was there, and the next put goes in.
    assert channel.get_nowait() == "first" and channel.empty()
    await asyncio.wait_for(channel.put("third"), 1)
    assert await asyncio.wait_for(channel.get(), 1) == "third"
