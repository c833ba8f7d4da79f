"""How an answer being streamed ends when the queue ends it: the processing limit and shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from guest_queue.core import events as ev
from guest_queue.core.records import Status
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

from .conftest import GateWorkflow, Stream, make_manager, until


class Endless:
    """Streams chunks as fast as the channel takes them, and never finishes."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        try:
            i = 0
            while True:
                yield f"part{i} "
                i += 1
        finally:
            self.closed.append(request.query)


async def test_a_slow_reader_behind_a_fast_workflow_is_still_cut_off_at_the_limit() -> None:
    """Chunks always waiting (no timer ever runs out) do not let an answer outlive its limit."""
    workflow = Endless()
    manager = make_manager(workflow, request_timeout_sec=0.2, timeout_fallback="Too slow, sorry.")
    ticket = await manager.submit("chatty")
    began = time.monotonic()
    received: list[ev.Event] = []
    async with asyncio.timeout(3):
        async for event in manager.events(ticket):
            assert event is not None  # chunks keep coming: never a keep-alive
            received.append(event)
            await asyncio.sleep(0.005)  # a slow client: the channel stays full
    assert 0.2 <= time.monotonic() - began < 1.5
    names = [e.name for e in received]
    assert names[:2] == ["queued", "processing"]
    assert set(names[2:-1]) == {"answer_chunk"} and len(names) > 10
    assert received[-2].data == "Too slow, sorry."
    assert received[-1] == ev.Event(
        ev.TIMEOUT,
        {
            "error": "Request timed out after 0.2 s of answering.",
            "timeout_sec": 0.2,
            "fallback": "Too slow, sorry.",
        },
    )
    record = ticket.record
    assert record.status is Status.TIMEOUT
    assert (record.error_code, record.error_message) == (
        "timeout",
        "Request timed out after 0.2 s of answering.",
    )
    await until(lambda: workflow.closed == ["chatty"])  # the workflow was stopped
    assert manager.status()["timeout_requests"] == 1


async def test_an_answer_cut_off_at_shutdown_tells_the_guest_the_server_is_restarting(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, shutdown_grace_sec=0.1)
    stream = Stream(manager, await manager.submit("stuck"))
    await until(lambda: stream.names.count("answer_chunk") == 2)
    await asyncio.wait_for(manager.close(), 3)
    assert (await stream.done())[-1] == "error"
    assert stream.events[-1].data == {"error": "The server is restarting.", "code": "shutting_down"}
    record = stream.ticket.record
    assert (record.status, record.error_code, record.error_message) == (
        Status.CANCELLED,
        "shutting_down",
        "The server is restarting.",
    )
