"""Resumable requests: a disconnect keeps the place, a resume gets exactly what was missed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core import resume
from guest_queue.core.backends.base import Ticket
from guest_queue.core.eventlog import EventLog, LogTrimmed
from guest_queue.core.events import Event
from guest_queue.core.manager import QueueManager
from guest_queue.core.resume import LogExpired, Resumable, Resumes

from .conftest import GateWorkflow, make_manager, until


class Reader:
    """One connection reading a resumable request's log, as a server would drive it."""

    def __init__(self, manager: QueueManager, res: Resumable, after: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.heartbeats = 0
        self._gen = manager.resumes.read(res, after, with_ids=True)
        self.task = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        async for part in self._gen:
            for message in part.decode().split("\n\n"):
                if message.startswith(":"):
                    self.heartbeats += 1
                elif message:
                    data, id_line = message.split("\n")
                    self.events.append(json.loads(data[len("data: ") :]))
                    self.ids.append(int(id_line[len("id: ") :]))

    @property
    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    async def disconnect(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def done(self, timeout: float = 5) -> list[str]:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.names


async def resumable(manager: QueueManager, query: str) -> tuple[Ticket, Resumable]:
    ticket = await manager.submit(query)
    return ticket, manager.resumable(ticket)


def chunks(reader: Reader) -> str:
    return "".join(e["data"] for e in reader.events if e["event"] == "answer_chunk")


async def test_a_waiting_guest_comes_back_to_the_same_place(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, resume_grace_sec=5)
    first, res_first = await resumable(manager, "first")
    await until(lambda: gate.started == ["first"])
    middle, res_middle = await resumable(manager, "middle")
    last, res_last = await resumable(manager, "last")
    readers = [Reader(manager, r) for r in (res_first, res_middle, res_last)]
    await until(lambda: readers[1].names == ["queued"])
    assert readers[1].events[0]["data"]["queue_position"] == 1
    await readers[1].disconnect()
    await asyncio.sleep(0.1)
    assert middle.position == 1 and manager.status()["queue_size"] == 2
    back = Reader(manager, res_middle, after=readers[1].seqs[-1])
    gate.open(first.request_id)
    await until(lambda: "processing" in back.names)
    assert gate.started == ["first", "middle"]  # first come, first served, place kept
    gate.open(middle.request_id)
    gate.open(last.request_id)
    assert (await back.done())[-1] == "workflow_complete"
    assert [*readers[1].seqs, *back.seqs] == list(range(1, len(readers[1].seqs + back.seqs) + 1))
    assert back.ids == back.seqs
    await readers[2].done()
    assert gate.started == ["first", "middle", "last"]
    assert manager.status()["completed_requests"] == 3


async def test_a_resume_while_processing_gets_exactly_the_missed_events() -> None:
    release = asyncio.Event()

    class Chunky:
        async def stream(self, request: Any) -> Any:
            for i in range(3):
                yield f"a{i} "
            await release.wait()
            for i in range(3):
                yield f"b{i} "
            yield {"event": "workflow_complete", "data": {"suggested_questions": []}}

    manager = make_manager(Chunky(), resume_grace_sec=5)
    _ticket, res = await resumable(manager, "q")
    reader = Reader(manager, res)
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    release.set()
    await until(lambda: res.log.finished)
    seen = reader.seqs[-1]
    back = Reader(manager, res, after=seen)
    await back.done()
    assert chunks(reader) + chunks(back) == "a0 a1 a2 b0 b1 b2 "
    assert back.seqs == list(range(seen + 1, seen + 1 + len(back.seqs)))
    assert back.names[-1] == "workflow_complete"
    assert [*reader.names, *back.names].count("workflow_complete") == 1
    assert manager.status()["completed_requests"] == 1


async def test_nobody_coming_back_cancels_and_frees_after_the_grace(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, resume_grace_sec=0.2)
    running, res_running = await resumable(manager, "running")
    _waiting, res_waiting = await resumable(manager, "waiting")
    readers = [Reader(manager, res_running), Reader(manager, res_waiting)]
    await until(lambda: gate.started == ["running"] and readers[1].names == ["queued"])
    for reader in readers:
        await reader.disconnect()
    await asyncio.sleep(0.1)
    assert manager.status()["active_requests"] == 1 and manager.status()["queue_size"] == 1
    await until(lambda: manager.status()["cancelled_requests"] == 2)
    await until(lambda: manager.status()["active_requests"] == 0)
    assert manager.status()["queue_size"] == 0
    await until(lambda: gate.closed == ["running"])  # the workflow was stopped
    assert gate.started == ["running"]
    with pytest.raises(LogExpired):
        manager.resumes.get(running.request_id)
    with pytest.raises(KeyError):
        manager.resumes.get("00000000-0000-4000-8000-000000000000")


async def test_a_finished_log_is_kept_for_the_grace_then_expires(gate: GateWorkflow) -> None:
    manager = make_manager(gate, resume_grace_sec=0.3)
    ticket, res = await resumable(manager, "q")
    gate.open(ticket.request_id)
    await until(lambda: res.log.finished)
    late = Reader(manager, manager.resumes.get(ticket.request_id), after=2)
    assert (await late.done())[-1] == "workflow_complete"
    await asyncio.sleep(0.4)
    with pytest.raises(LogExpired):
        manager.resumes.get(ticket.request_id)
    assert manager.status()["completed_requests"] == 1


async def test_the_most_recently_expired_ids_are_the_ones_remembered(
    gate: GateWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resume, "EXPIRED_MEMORY", 2)
    manager = make_manager(gate, resume_grace_sec=0.05)
    tickets = []
    for query in ("first", "second", "third"):
        ticket, res = await resumable(manager, query)
        gate.open(ticket.request_id)
        await until(lambda: manager.resumes.by_id == {})  # dropped, one after the other
        assert res.log.finished
        tickets.append(ticket)
    # A late resume of either of the last two: "expired" (410); of the first: "unknown" (404).
    for ticket in tickets[1:]:
        with pytest.raises(LogExpired):
            manager.resumes.get(ticket.request_id)
    with pytest.raises(KeyError):
        manager.resumes.get(tickets[0].request_id)


async def test_a_newer_reader_replaces_the_older(gate: GateWorkflow) -> None:
    manager = make_manager(gate, resume_grace_sec=5)
    ticket, res = await resumable(manager, "q")
    old = Reader(manager, res)
    await until(lambda: chunks(old) == "q-0 q-1 ")
    new = Reader(manager, res, after=1)
    await old.done(timeout=1)  # its stream ended at once
    gate.open(ticket.request_id)
    await new.done()
    assert new.seqs[0] == 2 and new.names[-1] == "workflow_complete"
    assert ticket.record.status.value == "completed"


async def test_cancel_frees_a_place_or_a_slot_at_once(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, resume_grace_sec=5)
    running, res_running = await resumable(manager, "running")
    waiting, res_waiting = await resumable(manager, "waiting")
    readers = [Reader(manager, res_running), Reader(manager, res_waiting)]
    await until(lambda: gate.started == ["running"])
    assert manager.cancel(waiting.request_id) is not None
    assert manager.status()["queue_size"] == 0
    await readers[1].done()
    assert readers[1].events[-1]["data"]["code"] == "cancelled"
    assert manager.cancel(running.request_id) is not None
    await readers[0].done()
    assert readers[0].events[-1]["data"]["code"] == "cancelled"
    await until(lambda: manager.status()["active_requests"] == 0)
    assert gate.closed == ["running"]
    assert manager.status()["cancelled_requests"] == 2
    # Cancelling again changes nothing; an unknown id is None.
    assert manager.cancel(running.request_id) is not None
    assert manager.status()["cancelled_requests"] == 2
    assert manager.cancel("00000000-0000-4000-8000-000000000000") is None


async def test_an_attached_reader_gets_an_answer_longer_than_the_log() -> None:
    class Long:
        async def stream(self, request: Any) -> Any:
            for i in range(200):
                yield f"{i} "

    manager = make_manager(Long(), resume_log_max_events=16, resume_grace_sec=5)
    _ticket, res = await resumable(manager, "q")
    reader = Reader(manager, res)
    await reader.done()
    assert chunks(reader) == "".join(f"{i} " for i in range(200))
    assert reader.seqs == list(range(1, 204))
    assert len(res.log) <= 16
    with pytest.raises(LogTrimmed):
        res.log.read_after(0)
    late = Reader(manager, res, after=0)  # too far behind: told so, never a silent end
    assert await late.done() == ["error"]
    assert late.events[0]["data"] == {"error": "Part of the answer is lost.", "code": "unavailable"}


def test_the_log_trims_the_oldest_unless_the_reader_still_needs_them() -> None:
    log = EventLog(max_events=3, max_bytes=10_000)
    for i in range(5):
        log.append(Event("answer_chunk", str(i)))
    assert log.first_seq == 3 and [s for s, _ in log.read_after(2)] == [3, 4, 5]
    with pytest.raises(LogTrimmed):
        log.read_after(1)
    log.pin(5)
    log.append(Event("answer_chunk", "x"))
    log.pin(4)
    for _ in range(3):
        log.append(Event("answer_chunk", "y"))
    assert log.full and log.first_seq == 5  # seq 5 on are kept for the reader
    log.pin(None)
    assert len(log) == 3
    assert not log.full


def test_reading_after_any_seq_gives_exactly_the_later_events() -> None:
    log = EventLog(max_events=1000, max_bytes=1_000_000)
    for i in range(10):
        log.append(Event("answer_chunk", {"text": str(i)}))
    for after in range(11):
        assert [s for s, _ in log.read_after(after)] == list(range(after + 1, 11)), after
    assert [e.data["text"] for _, e in log.read_after(7)] == ["7", "8", "9"]


async def test_a_long_answer_before_the_first_reader_attaches_is_kept_for_it() -> None:
    class Long:
        async def stream(self, request: Any) -> Any:
            for i in range(200):
                yield f"{i} "

    manager = make_manager(Long(), resume_log_max_events=16, resume_grace_sec=5)
    ticket, res = await resumable(manager, "q")
    await asyncio.sleep(0.2)  # the POST's reader is slow to attach
    # Meanwhile the answer waits for it, its log within its cap (one over, then it waits).
    assert len(res.log) <= 17 and not ticket.record.status.is_terminal
    reader = Reader(manager, res)
    await reader.done()
    assert chunks(reader) == "".join(f"{i} " for i in range(200))
    assert reader.names[-1] == "workflow_complete"


async def test_a_log_read_to_its_end_is_kept_for_the_grace_after_the_answer(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, resume_grace_sec=0.3)
    ticket, res = await resumable(manager, "q")
    reader = Reader(manager, res)  # attached from the start: no grace runs meanwhile
    await until(lambda: reader.names == ["queued", "processing", "answer_chunk", "answer_chunk"])
    await asyncio.sleep(0.4)  # longer than the grace: still answering, still kept
    gate.open(ticket.request_id)
    assert (await reader.done())[-1] == "workflow_complete"
    assert manager.resumes.get(ticket.request_id) is res  # a late resume still finds it
    await asyncio.sleep(0.4)
    with pytest.raises(LogExpired):
        manager.resumes.get(ticket.request_id)
    await manager.close()


async def test_a_driver_that_fails_is_logged_and_its_log_closed(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    # This source is not the queue's stream, whose own clean-up would end the ticket:
    # no grace for the running ticket at close.
    manager = make_manager(gate, shutdown_grace_sec=0)

    async def broken(ticket: Ticket) -> AsyncIterator[Event | None]:
        yield Event("queued", {"queue_position": 1})
        raise RuntimeError("a bug in the stream")

    # The manager drives resumable requests through its own stream: one that breaks instead.
    manager.resumes = Resumes(manager.config, broken, manager.stopper.spawn, None)
    with caplog.at_level(logging.ERROR, logger="guest_queue"):
        ticket, res = await resumable(manager, "q")
        await until(lambda: res.log.finished)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == f"Driving resumable request {ticket.request_id} failed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug in the stream"
    await manager.close()


async def test_an_answer_runs_to_its_end_while_its_guest_is_away() -> None:
    class Long:
        async def stream(self, request: Any) -> Any:
            for i in range(200):
                yield f"{i} "
                await asyncio.sleep(0)

    manager = make_manager(Long(), resume_log_max_events=16, resume_grace_sec=5)
    ticket, res = await resumable(manager, "q")
    reader = Reader(manager, res)
    await until(lambda: "answer_chunk" in reader.names)
    await reader.disconnect()  # the phone lost its connection
    # Nobody reads: the log keeps only its last events, and the answer does not wait.
    await until(lambda: ticket.record.status.is_terminal, timeout=3)
    assert ticket.record.status.value == "completed"
    await manager.close()
