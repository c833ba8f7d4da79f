"""The queue's promises: order, limits, live positions, and exactly one ending per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core.errors import NotAccepting, QueueFull, Unavailable
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import Status
from guest_queue.core.stats import QueueStats
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

from .conftest import GateWorkflow, Stream, make_manager, until


def lookup(manager: QueueManager, request_id: str) -> dict[str, Any]:
    found = manager.lookup(request_id)
    assert found is not None
    return found


def reconciles(manager: QueueManager) -> bool:
    s = manager.status()
    ended = sum(
        s[k]
        for k in ("completed_requests", "failed_requests", "timeout_requests", "cancelled_requests")
    )
    return bool(s["total_requests"] == ended + s["active_requests"] + s["queue_size"])


async def test_a_request_streams_queued_processing_chunks_and_complete(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    stream = Stream(manager, await manager.submit("q"))
    await until(lambda: gate.started)
    gate.open(stream.ticket.request_id)
    names = await stream.done()
    assert names == ["queued", "processing", "answer_chunk", "answer_chunk", "workflow_complete"]
    queued = stream.events[0].data
    assert queued["queue_position"] == 1 and queued["queue_size"] == 0
    assert stream.events[-1].data == {"suggested_questions": ["more?"], "cached": False}
    assert lookup(manager, stream.ticket.request_id)["status"] == "completed"
    assert manager.status()["completed_requests"] == 1 and reconciles(manager)


async def test_concurrency_limit_and_first_come_first_served(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=2, max_queue_size=10)
    streams = [Stream(manager, await manager.submit(f"r{i}")) for i in range(6)]
    await until(lambda: len(gate.started) == 2)
    assert [s.ticket.position for s in streams[2:]] == [1, 2, 3, 4]
    for i in range(6):
        # Finish the oldest running request; the next in line must be the one to start.
        gate.open(streams[i].ticket.request_id)
        await streams[i].done()
        await until(lambda i=i: len(gate.started) == min(6, i + 3))
    assert gate.started == [f"r{i}" for i in range(6)]
    assert gate.max_running == 2
    assert reconciles(manager)


async def test_waiters_get_their_new_position_when_the_line_moves(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    first = Stream(manager, await manager.submit("a"))
    waiters = [Stream(manager, await manager.submit(f"w{i}")) for i in range(3)]
    await until(lambda: all(w.events for w in waiters))
    assert [w.positions() for w in waiters] == [[1], [2], [3]]
    gate.open(first.ticket.request_id)
    await first.done()
    await until(lambda: waiters[2].positions() == [3, 2])
    assert waiters[1].positions() == [2, 1]
    assert waiters[0].names[:2] == ["queued", "processing"]
    # A waiter leaving from the middle moves those behind it up.
    await waiters[1].disconnect()
    await until(lambda: waiters[2].positions() == [3, 2, 1])
    assert lookup(manager, waiters[1].ticket.request_id)["status"] == "cancelled"
    assert reconciles(manager)


async def test_position_updates_are_coalesced_to_the_latest_value(gate: GateWorkflow) -> None:
    manager = make_manager(
        gate, max_concurrent=1, max_queue_size=100, position_update_interval_sec=0.2
    )
    Stream(manager, await manager.submit("head"))
    waiters = [Stream(manager, await manager.submit(f"w{i}")) for i in range(30)]
    await until(lambda: all(w.events for w in waiters))
    for w in waiters[:20]:  # twenty leave at once
        await w.disconnect()
    last = waiters[-1]
    await until(lambda: last.positions()[-1] == 10)
    # The first departure is sent at once, the other nineteen as one update: 30, 29, 10.
    assert last.positions()[-1] == 10 and len(last.positions()) <= 3


async def test_position_updates_keep_the_configured_pace_without_failing(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(
        gate,
        max_concurrent=1,
        max_queue_size=10,
        max_per_client=3,
        position_update_interval_sec=0.2,
        shutdown_grace_sec=0,
    )
    Stream(manager, await manager.submit("head", client_hint="h"))
    waiters = [
        Stream(manager, await manager.submit(f"w{i}", client_hint=f"c{i}")) for i in range(4)
    ]
    last = waiters[-1]
    await until(lambda: last.positions() == [4])
    began = time.monotonic()
    await waiters[0].disconnect()
    await until(lambda: last.positions() == [4, 3])  # the first change goes out at once
    await waiters[1].disconnect()
    await until(lambda: last.positions() == [4, 3, 2])  # the next, one interval later
    took = time.monotonic() - began
    assert 0.15 <= took <= 1.5, (
        took
    )  # not before the interval; well before a restart's 0.5 s + pass
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await manager.close()


async def test_queue_full_is_refused_with_a_retry_hint_and_counted(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_size=2, request_timeout_sec=40)
    streams = [Stream(manager, await manager.submit(f"r{i}")) for i in range(3)]
    with pytest.raises(QueueFull) as refused:
        await manager.submit("one too many")
    assert refused.value.status_code == 429
    assert refused.value.retry_after == 5  # no history yet: a short guess, not the timeout
    status = manager.status()
    assert status["rejected_requests"] == 1 and status["total_requests"] == 3
    assert status["queue_size"] == 2 and status["active_requests"] == 1
    for s in streams:
        gate.open(s.ticket.request_id)
    await asyncio.gather(*(s.done() for s in streams))


async def test_retry_after_follows_recent_processing_time() -> None:
    class Quick:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            await asyncio.sleep(0.05)
            yield "x"

    manager = make_manager(Quick(), max_concurrent=1, max_queue_size=0, request_timeout_sec=60)
    await Stream(manager, await manager.submit("a")).done()
    assert manager.stats.retry_after(1, 60) == 1
    manager.stats.processing_ms.add(9000)
    assert manager.stats.retry_after(1, 60) > 1


def test_retry_after_spreads_the_processing_time_over_the_slots() -> None:
    stats = QueueStats()
    assert stats.retry_after(1, 60) == 5  # no history: a short guess
    assert stats.retry_after(1, 2) == 2  # never more than the timeout
    assert stats.retry_after(3, 60) == 2  # 5 s over 3 slots, rounded up
    stats.processing_ms.add(9000)
    assert stats.retry_after(1, 60) == 9
    assert stats.retry_after(3, 60) == 3
    stats.processing_ms.add(2_000_000)
    assert stats.retry_after(1, 60) == 300  # capped


def test_estimated_wait_counts_the_guests_ahead_beyond_the_free_slots() -> None:
    stats = QueueStats()
    assert stats.estimate_wait_sec(3, 0, 2) is None  # nothing finished yet: unknown
    stats.processing_ms.add(1234)
    # Three ahead, two slots, 1.234 s each: 1.851 s, to a tenth.
    assert stats.estimate_wait_sec(3, 0, 2) == 1.9
    assert stats.estimate_wait_sec(3, 1, 1) == 2.5  # one slot about to free up: two ahead
    assert stats.estimate_wait_sec(2, 2, 2) == 0.0  # a slot for it already
    assert stats.estimate_wait_sec(1, 3, 1) == 0.0  # never negative


async def test_estimated_wait_comes_from_recent_processing_times(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    early = Stream(manager, await manager.submit("early"))
    await until(lambda: early.events)
    assert early.events[0].data["estimated_wait_sec"] is None  # no data yet
    gate.open(head.ticket.request_id)
    await head.done()
    manager.stats.processing_ms.add(4000)
    late = Stream(manager, await manager.submit("late"))
    await until(lambda: late.events)
    assert late.events[0].data["queue_position"] == 1
    assert late.events[0].data["estimated_wait_sec"] > 0
    for s in (early, late):
        gate.open(s.ticket.request_id)


async def test_timeout_cancels_the_workflow_and_sends_the_fallback(gate: GateWorkflow) -> None:
    manager = make_manager(gate, request_timeout_sec=0.2, timeout_fallback="Too slow, sorry.")
    stream = Stream(manager, await manager.submit("slow"))
    names = await stream.done()
    assert names[-2:] == ["answer_chunk", "timeout"]
    assert stream.events[-2].data == "Too slow, sorry."
    assert stream.events[-1].data["timeout_sec"] == 0.2
    assert stream.events[-1].data["error"] == "Request timed out after 0.2 s of answering."
    record = stream.ticket.record
    assert record.error_code == "timeout"
    assert record.error_message == "Request timed out after 0.2 s of answering."
    assert stream.events[-1].data["fallback"] == "Too slow, sorry."
    await until(lambda: gate.closed == ["slow"])  # the workflow was cancelled and closed
    assert manager.status()["timeout_requests"] == 1
    assert manager.status()["active_requests"] == 0


async def test_queue_wait_limit_ends_a_request_that_waited_too_long(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_wait_sec=0.2)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    assert (await waiter.done())[-1] == "timeout"
    assert waiter.events[-1].data == {
        "error": "Request timed out after 0.2 s of waiting in line.",
        "timeout_sec": 0.2,
        "fallback": manager.config.timeout_fallback,
    }
    assert gate.started == ["head"]
    assert manager.status()["queue_size"] == 0
    gate.open(head.ticket.request_id)
    await head.done()


async def test_a_guest_admitted_within_the_queue_wait_limit_is_answered(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_wait_sec=5)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: waiter.events)
    await asyncio.sleep(0.1)  # waiting in line, well within the limit
    assert waiter.names == ["queued"]
    gate.open(head.ticket.request_id)
    await head.done()
    await until(lambda: gate.started == ["head", "waiter"])
    gate.open(waiter.ticket.request_id)
    assert (await waiter.done())[-1] == "workflow_complete"
    assert manager.status()["timeout_requests"] == 0


async def test_disconnect_while_processing_cancels_the_workflow_and_frees_the_slot(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, max_concurrent=1)
    first = Stream(manager, await manager.submit("first"))
    second = Stream(manager, await manager.submit("second"))
    await until(lambda: gate.started == ["first"])
    await first.disconnect()
    await until(lambda: gate.closed == ["first"])
    await until(lambda: gate.started == ["first", "second"])
    assert lookup(manager, first.ticket.request_id)["status"] == "cancelled"
    gate.open(second.ticket.request_id)
    await second.done()
    assert manager.status()["cancelled_requests"] == 1 and reconciles(manager)


async def test_disconnected_waiter_never_starts_its_workflow(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1)
    head = Stream(manager, await manager.submit("head"))
    gone = Stream(manager, await manager.submit("gone"))
    await until(lambda: gone.events)
    await gone.disconnect()
    gate.open(head.ticket.request_id)
    await head.done()
    await asyncio.sleep(0.05)
    assert gate.started == ["head"]
    assert manager.status()["queue_size"] == 0 and reconciles(manager)


async def test_release_is_idempotent_and_counts_once(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    ticket = await manager.submit("never streamed")
    manager.release(ticket)
    manager.release(ticket)
    status = manager.status()
    assert status["cancelled_requests"] == 1 and status["active_requests"] == 0
    assert reconciles(manager)


async def test_unclaimed_tickets_are_released(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, unclaimed_ticket_sec=0.05)
    manager.start()
    await manager.submit("abandoned before its stream started")
    await until(lambda: manager.status()["active_requests"] == 0)
    assert manager.status()["cancelled_requests"] == 1
    await manager.close()


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        ("workflow_error", "workflow_error", "The upstream said no."),
        ("unavailable", "unavailable", "Model server down."),
        ("crash", "internal", "Sorry, something went wrong while answering. Please try again."),
    ],
)
async def test_workflow_failures_end_with_one_error_event(
    failure: str, code: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    from guest_queue.workflows.base import WorkflowError, WorkflowUnavailable

    class Failing:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "partial "
            if failure == "workflow_error":
                raise WorkflowError("The upstream said no.")
            if failure == "unavailable":
                raise WorkflowUnavailable("Model server down.")
            raise RuntimeError("password=hunter2")

    manager = make_manager(Failing())
    stream = Stream(manager, await manager.submit("q"))
    names = await stream.done()
    assert names == ["queued", "processing", "answer_chunk", "error"]
    assert stream.events[-1].data == {"error": message, "code": code}
    assert "hunter2" not in str(stream.events)
    assert manager.status()["failed_requests"] == 1
    if failure == "unavailable":
        # The next request is refused up front while the service is known to be down.
        with pytest.raises(Unavailable):
            await manager.submit("again")


async def test_custom_events_pass_through_and_reserved_ones_do_not() -> None:
    class Chatty:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield {"event": "sources", "data": ["doc-1"]}
            yield {"event": "queued", "data": "fake"}
            yield {"event": "answer_chunk", "data": "hello"}

    manager = make_manager(Chatty())
    stream = Stream(manager, await manager.submit("q"))
    names = await stream.done()
    assert names == ["queued", "processing", "sources", "answer_chunk", "workflow_complete"]
    assert stream.events[-1].data == {"suggested_questions": [], "cached": False}


async def test_heartbeats_keep_idle_streams_alive(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, heartbeat_sec=0.05)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: head.heartbeats >= 2 and waiter.heartbeats >= 2)
    gate.open(head.ticket.request_id)
    gate.open(waiter.ticket.request_id)
    await asyncio.gather(head.done(), waiter.done())


async def test_unavailable_workflow_refuses_before_the_stream() -> None:
    class Down:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "never"

        async def is_available(self) -> bool:
            return False

    manager = make_manager(Down())
    with pytest.raises(Unavailable) as refused:
        await manager.submit("q")
    assert refused.value.status_code == 503 and refused.value.retry_after >= 1
    assert manager.status()["rejected_requests"] == 1
    assert manager.status()["total_requests"] == 0


async def test_drain_ends_waiters_and_lets_processing_finish(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, shutdown_grace_sec=5)
    head = Stream(manager, await manager.submit("head"))
    waiter = Stream(manager, await manager.submit("waiter"))
    await until(lambda: waiter.events)
    drain = asyncio.ensure_future(manager.drain())
    assert (await waiter.done())[-1] == "error"
    assert waiter.events[-1].data == {
        "error": "The server is restarting.",
        "code": "shutting_down",
    }
    with pytest.raises(NotAccepting) as refused:
        await manager.submit("late")
    assert refused.value.status_code == 503 and refused.value.retry_after == 5
    assert (
        str(refused.value) == refused.value.message == "The server is restarting; please try again."
    )
    assert not drain.done()  # still waiting for the processing request
    gate.open(head.ticket.request_id)
    assert (await head.done())[-1] == "workflow_complete"
    await asyncio.wait_for(drain, 2)
    assert lookup(manager, waiter.ticket.request_id)["status"] == "cancelled"
    assert gate.started == ["head"]


async def test_drain_cuts_off_processing_after_the_grace_period(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(gate, shutdown_grace_sec=0.1)
    stream = Stream(manager, await manager.submit("stuck"))
    await until(lambda: gate.started)
    await asyncio.wait_for(manager.close(), 3)
    assert (await stream.done())[-1] == "error"
    assert stream.events[-1].data["code"] == "shutting_down"
    assert gate.closed == ["stuck"]
    assert "1 request(s) cut off at shutdown" in [r.getMessage() for r in caplog.records]
    assert lookup(manager, stream.ticket.request_id)["status"] == "cancelled"
    assert not manager.stopper.background and not manager.stopper.workflow_tasks


async def test_drain_ends_a_request_whose_stream_never_started() -> None:
    manager = make_manager(GateWorkflow(), shutdown_grace_sec=0.1)
    ticket = await manager.submit("orphan")  # admitted, but no client reads its stream
    await asyncio.wait_for(manager.close(), 3)
    record = ticket.record
    assert record.status is Status.CANCELLED
    assert (record.error_code, record.error_message) == (
        "shutting_down",
        "The server is restarting.",
    )
    assert manager.status()["cancelled_requests"] == 1


async def test_recent_requests_are_bounded() -> None:
    class Instant:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "x"

    manager = make_manager(Instant(), history_limit=5)
    ids = []
    for i in range(8):
        stream = Stream(manager, await manager.submit(f"q{i}"))
        await stream.done()
        ids.append(stream.ticket.request_id)
    assert len(manager.recent) == 5
    assert manager.lookup(ids[0]) is None
    assert lookup(manager, ids[-1])["status"] == "completed"


async def test_thousands_of_waiters_all_get_their_update(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_size=5000)
    head = Stream(manager, await manager.submit("head"))
    waiters = [Stream(manager, await manager.submit(f"w{i}")) for i in range(3000)]
    await until(lambda: all(w.events for w in waiters), timeout=20)
    gate.open(head.ticket.request_id)
    await head.done()
    await until(lambda: "processing" in waiters[0].names)
    await until(lambda: all(w.positions()[-1] == i for i, w in enumerate(waiters) if i), timeout=20)
    assert all(len(w.positions()) == 2 for w in waiters[1:])
    for w in reversed(waiters):
        await w.disconnect()
    assert reconciles(manager) and manager.status()["queue_size"] == 0


async def test_the_next_request_starts_only_once_a_cancelled_workflow_has_cleaned_up() -> None:
    events: list[str] = []

    class SlowCleanup:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            events.append(f"start {request.query}")
            try:
                yield "chunk "
                await asyncio.sleep(10)
            finally:
                await asyncio.sleep(0.2)  # e.g. closing the upstream connection
                events.append(f"stopped {request.query}")

    manager = make_manager(SlowCleanup(), max_concurrent=1)
    first = Stream(manager, await manager.submit("first"))
    second = Stream(manager, await manager.submit("second"))
    await until(lambda: events == ["start first"])
    await first.disconnect()
    await until(lambda: len(events) == 3)
    assert events == ["start first", "stopped first", "start second"]
    await second.disconnect()


async def test_a_workflow_that_ignores_cancellation_loses_its_slot_after_a_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from guest_queue.core import stopping

    monkeypatch.setattr(stopping, "STOP_GRACE_SEC", 0.3)
    started: list[str] = []

    class Stubborn:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            started.append(request.query)
            yield "chunk "
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if request.query == "second" or len(started) > 1:
                        raise

    manager = make_manager(Stubborn(), max_concurrent=1)
    first = Stream(manager, await manager.submit("first"))
    second = Stream(manager, await manager.submit("second"))
    await until(lambda: started == ["first"])
    await first.disconnect()
    await asyncio.sleep(0.1)
    assert started == ["first"]  # Still cleaning up (it says): the slot is still its.
    await until(lambda: started == ["first", "second"], timeout=2)
    await second.disconnect()
    await asyncio.wait_for(manager.close(), 2)  # Shutdown does not wait on it forever either.


def test_a_set_up_warning_added_by_the_host_is_reported(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    assert manager.warnings == []
    manager.add_warning("Several processes each run their own local queue.")
    assert manager.warnings == ["Several processes each run their own local queue."]


async def test_a_drain_whose_preparation_fails_still_ends_every_guest_cleanly(
    gate: GateWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(gate, max_concurrent=1, shutdown_grace_sec=0)

    async def failing_hand_off() -> None:
        raise ConnectionError("Redis went away")

    manager.stopper.before_drain = failing_hand_off
    running = Stream(manager, await manager.submit("running"))
    waiting = Stream(manager, await manager.submit("waiting"))
    await until(lambda: waiting.names == ["queued"])
    await manager.close()
    assert waiting.names == ["queued", "error"]
    assert waiting.events[-1].data["code"] == "shutting_down"
    assert running.events[-1].data["code"] == "shutting_down"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["Preparing the drain failed"]
    assert errors[0].exc_info is not None  # with the traceback, for the operator


async def test_shutdown_waits_a_bounded_time_for_a_workflow_that_will_not_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from guest_queue.core import stopping

    monkeypatch.setattr(stopping, "STOP_GRACE_SEC", 0.3)

    let_go = asyncio.Event()
    stopped: list[str] = []

    class Deaf:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "chunk "
            while not let_go.is_set():  # shrugs off every cancel until the test lets it go
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.05)
            stopped.append(request.query)

    manager = make_manager(Deaf(), max_concurrent=1, shutdown_grace_sec=0)
    stream = Stream(manager, await manager.submit("deaf"))
    await until(lambda: "answer_chunk" in stream.names)
    began = time.monotonic()
    await asyncio.wait_for(manager.close(), 3)
    assert time.monotonic() - began < 1.5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    try:
        assert "1 workflow(s) did not stop when cancelled" in warnings
    finally:
        let_go.set()
    await until(lambda: stopped == ["deaf"])


async def test_closing_an_idle_queue_is_immediate(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    began = time.monotonic()
    await manager.close()
    assert time.monotonic() - began < 0.9  # no pause for requests that are not there


async def test_the_workflow_is_given_the_guests_language_and_earlier_turns() -> None:
    heard: list[WorkflowRequest] = []

    class Listening:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            heard.append(request)
            yield "Xin chào."

    manager = make_manager(Listening())
    history = (("user", "Hello"), ("assistant", "Hi! How can I help?"))
    ticket = await manager.submit("Còn phòng không?", language="vi", history=history)
    assert (await Stream(manager, ticket).done())[-1] == "workflow_complete"
    [request] = heard
    assert (request.request_id, request.query) == (ticket.request_id, "Còn phòng không?")
    assert (request.language, request.history) == ("vi", history)


async def test_status_reports_accepting_false_once_the_drain_begins(gate: GateWorkflow) -> None:
    manager = make_manager(gate)
    manager.start()
    assert manager.status()["accepting"] is True
    await asyncio.wait_for(manager.drain(), 2)
    assert manager.status()["accepting"] is False  # a JSON boolean for the operator, not null
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
