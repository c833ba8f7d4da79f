"""The workflow runner's channel and endings; the moving averages behind queue/status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core.endings import Ending
from guest_queue.core.records import RequestRecord, Status
from guest_queue.core.runner import GENERIC_FAILURE, Channel, Wake, run_workflow
from guest_queue.core.stats import MovingAverage, QueueStats
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest


def request(request_id: str = "r1") -> WorkflowRequest:
    return WorkflowRequest(request_id=request_id, query="q")


class Endless:
    """Streams chunks for ever; notes when its generator was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        try:
            while True:
                yield "chunk "
        finally:
            self.closed = True


class PlainIterator:
    """An async iterator that is not a generator: it has no ``aclose``."""

    def __init__(self, items: list[str]) -> None:
        self._items = list(items)

    def __aiter__(self) -> PlainIterator:
        return self

    async def __anext__(self) -> str:
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)


class PlainWorkflow:
    def stream(self, request: WorkflowRequest) -> PlainIterator:
        return PlainIterator(["Hello ", "there."])


class Broken:
    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        yield "partial "
        raise RuntimeError("boom")


def drain(channel: Channel) -> list[Any]:
    items = []
    while not channel.empty():
        items.append(channel.get_nowait())
    return items


async def test_a_cancelled_workflow_is_closed_at_once_even_when_its_output_waits_for_room() -> None:
    workflow = Endless()
    channel = Channel(2)
    task = asyncio.ensure_future(run_workflow(workflow, request(), channel, lambda: None))
    await asyncio.sleep(0.01)
    assert channel.full() and not task.done()  # waiting for room, the generator suspended
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # The generator's cleanup (closing its HTTP connection, say) ran before the task ended,
    # not whenever the generator is garbage-collected.
    assert workflow.closed
    assert task.cancelled()  # the caller sees a cancellation, not an error
    assert drain(channel) == ["chunk ", "chunk "]  # full: no room for a Wake


async def test_a_cancelled_workflow_wakes_the_reader_when_there_is_room() -> None:
    gate = asyncio.Event()

    class Waits:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "first "
            await gate.wait()

    channel = Channel(2)
    task = asyncio.ensure_future(run_workflow(Waits(), request(), channel, lambda: None))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert drain(channel) == ["first ", Wake()]


async def test_a_workflow_that_is_a_plain_async_iterator_is_answered() -> None:
    channel = Channel(8)
    await run_workflow(PlainWorkflow(), request(), channel, lambda: None)
    assert drain(channel) == ["Hello ", "there.", Ending.completed()]


async def test_an_unexpected_failure_is_logged_with_the_request_and_told_generically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = Channel(8)
    with caplog.at_level(logging.ERROR, logger="guest_queue"):
        await run_workflow(Broken(), request("req-42"), channel, lambda: None)
    assert drain(channel) == ["partial ", Ending.failed("internal", GENERIC_FAILURE)]
    (record,) = [r for r in caplog.records if r.name == "guest_queue"]
    assert record.getMessage() == "Workflow failed for request req-42"
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert str(record.exc_info[1]) == "boom"


async def test_a_reader_that_stops_waiting_leaves_the_channel_working() -> None:
    channel = Channel(2)
    reader = asyncio.ensure_future(channel.get())
    await asyncio.sleep(0)
    assert not reader.done()  # empty: the reader waits
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    channel.put_nowait("first")  # the writer is not tripped by the reader that left
    assert await asyncio.wait_for(channel.get(), 1) == "first"
    getter = asyncio.ensure_future(channel.get())
    await asyncio.sleep(0)
    await channel.put("second")
    assert await asyncio.wait_for(getter, 1) == "second"


def test_a_fresh_channel_takes_an_item_at_once() -> None:
    channel = Channel(1)
    channel.put_nowait("first")
    with pytest.raises(asyncio.QueueFull):  # full at its size: the item is not taken
        channel.put_nowait("second")
    assert channel.full() and channel.get_nowait() == "first"
    assert channel.empty()


def test_the_moving_average_is_the_mean_of_the_last_samples() -> None:
    average = MovingAverage(size=3)
    assert average.value is None
    for sample in (10.0, 20.0, 40.0):
        average.add(sample)
    assert average.value == pytest.approx(70 / 3)
    average.add(100.0)  # 10 drops out
    assert average.value == pytest.approx(160 / 3)
    average.add(1.0)  # 20 drops out
    assert average.value == pytest.approx(141 / 3)
    default = MovingAverage()
    for _ in range(50):
        default.add(1000.0)
    default.add(3000.0)  # the 51st: the first of 50 drops out
    assert default.value == pytest.approx(1040.0)


def record(request_id: str, status: Status, **monos: float | None) -> RequestRecord:
    rec = RequestRecord(request_id=request_id, query="q", created_mono=100.0)
    rec.status = status
    rec.started_mono = monos.get("started")
    rec.finished_mono = monos.get("finished")
    return rec


def averages(stats: QueueStats) -> tuple[float | None, float | None]:
    """The wait and processing averages queue/status shows."""
    return stats.wait_ms.value, stats.processing_ms.value


def test_the_wait_average_counts_only_requests_that_started() -> None:
    stats = QueueStats()
    stats.record_finished(record("a", Status.CANCELLED, finished=109.0))  # left the line
    assert averages(stats) == (None, None)
    assert stats.finished[Status.CANCELLED] == 1
    stats.record_finished(record("b", Status.COMPLETED, started=100.4, finished=101.0))
    stats.record_finished(record("c", Status.COMPLETED, started=100.2, finished=103.0))
    # Waits (400 + 200) / 2, the cancelled one left out; processing (600 + 2800) / 2.
    assert averages(stats) == (300, 1700)
    assert stats.finished[Status.COMPLETED] == 2
