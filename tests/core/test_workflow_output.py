"""Workflow output that is not strict JSON: every message stays strict JSON, the request ends
with one ``error`` event (``workflow_output``), its slot is freed and the log names the workflow."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core import events as ev
from guest_queue.core import runner
from guest_queue.core.consume import sse_stream
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import RequestRecord, Status
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest

from .conftest import Factory, make_manager, until
from .test_resume import Reader

WORKFLOW_PATH = f"{__name__}.BadOutput"


class BadOutput:
    """Answers ``Hello``, then yields ``bad`` (for queries starting ``bad``), then finishes."""

    def __init__(self, bad: Any) -> None:
        self.bad = bad
        self.closed: list[str] = []
        self.after_bad = 0

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        try:
            yield "Hello "
            if request.query.startswith("bad"):
                yield self.bad
                self.after_bad += 1
            yield "world."
            yield {"event": "workflow_complete", "data": {"suggested_questions": ["Why?"]}}
        finally:
            await asyncio.sleep(0)  # a clean-up that awaits (closing an upstream connection)
            self.closed.append(request.query)


def cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


BAD_ITEMS = {
    "NaN in a custom event": {"event": "sources", "data": {"score": float("nan")}},
    "Infinity in a custom event": {"event": "sources", "data": [1.0, float("inf")]},
    "an object in a custom event": {"event": "sources", "data": {"doc": object()}},
    "a set as a custom event's data": {"event": "sources", "data": {"a", "b"}},
    "a cycle in a custom event": {"event": "sources", "data": cyclic()},
    "a tuple as a key": {"event": "sources", "data": {(1, 2): "pair"}},
    "NaN in workflow_complete": {
        "event": "workflow_complete",
        "data": {"suggested_questions": ["Why?"], "confidence": float("nan")},
    },
    "a set of suggestions": {"event": "workflow_complete", "data": {"suggested_questions": {"x"}}},
    "an answer_chunk that is not text": {"event": "answer_chunk", "data": {"text": "hi"}},
}


def _refuse(word: str) -> None:
    raise ValueError(f"not strict JSON: {word}")


def strict(text: str) -> Any:
    """Parse as a browser's ``JSON.parse`` does: ``NaN`` and ``Infinity`` are errors."""
    return json.loads(text, parse_constant=_refuse)


def wire_messages(raw: bytes) -> list[dict[str, Any]]:
    """Each ``data:`` line of an SSE body, parsed strictly."""
    messages = []
    for block in raw.decode().split("\n\n"):
        if block and not block.startswith(":"):
            data_line = block.split("\n")[0]
            assert data_line.startswith("data: "), block
            messages.append(strict(data_line[len("data: ") :]))
    return messages


async def read_all(manager: QueueManager, query: str) -> tuple[list[dict[str, Any]], Any]:
    """Submit ``query`` and read its SSE stream to the end, as the view would."""
    ticket = await manager.submit(query)
    raw = b""
    async with asyncio.timeout(5):
        async for part in sse_stream(manager, ticket):
            raw += part
    return wire_messages(raw), ticket


def output_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "guest_queue" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("bad", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
async def test_output_that_is_not_strict_json_ends_the_request_with_one_error(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = BadOutput(bad)
    manager = make_manager(workflow, max_concurrent=1)
    finished: list[RequestRecord] = []
    manager.add_listener(finished.append)  # what writes the history row
    caplog.set_level(logging.INFO, logger="guest_queue")

    messages, ticket = await read_all(manager, "bad question")

    assert [m["event"] for m in messages] == ["queued", "processing", "answer_chunk", "error"]
    assert messages[2]["data"] == "Hello "
    assert messages[-1]["data"] == {
        "error": runner.GENERIC_FAILURE,
        "code": ev.CODE_WORKFLOW_OUTPUT,
    }
    assert [m["seq"] for m in messages] == [1, 2, 3, 4]
    record = ticket.record
    assert (record.status, record.error_code) == (Status.FAILED, ev.CODE_WORKFLOW_OUTPUT)
    assert finished == [record]  # one history row
    status = manager.status()
    assert (status["failed_requests"], status["completed_requests"]) == (1, 0)
    # The workflow was stopped at its bad item, not left to run on, and its clean-up ran
    # to its end (not cut short by the ending that frees its slot).
    assert workflow.closed == ["bad question"]
    assert workflow.after_bad == 0

    # One log line, naming the workflow (and the request, and why).
    errors = output_errors(caplog)
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert WORKFLOW_PATH in line and ticket.request_id in line
    assert ev.CODE_WORKFLOW_OUTPUT in line

    # The slot is free: the next question (one slot in all) is answered.
    await until(lambda: manager.status()["active_requests"] == 0)
    nxt, _ = await read_all(manager, "fine question")
    assert [m["event"] for m in nxt][-1] == "workflow_complete"
    assert "".join(m["data"] for m in nxt if m["event"] == "answer_chunk") == "Hello world."
    await manager.close()


async def test_strict_json_output_is_sent_as_it_is() -> None:
    """Floats, nesting, unicode and non-string keys JSON can carry still go through."""
    custom = {"event": "sources", "data": {"score": 0.25, 1: [None, True, {"t": "\u2028é"}]}}
    manager = make_manager(BadOutput(custom))
    messages, ticket = await read_all(manager, "bad but fine")
    assert [m["event"] for m in messages][-3:] == ["sources", "answer_chunk", "workflow_complete"]
    assert messages[-3]["data"] == {"score": 0.25, "1": [None, True, {"t": "\u2028é"}]}
    assert ticket.record.status is Status.COMPLETED
    await manager.close()


async def test_items_the_queue_does_not_send_are_not_judged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reserved event (dropped) or an error's message (sent as text) never ends the request
    as ``workflow_output``, whatever its data holds."""
    manager = make_manager(BadOutput({"event": "queued", "data": float("nan")}))
    messages, _ = await read_all(manager, "bad reserved")
    assert messages[-1]["event"] == "workflow_complete"
    manager.workflow = BadOutput({"event": "error", "data": {"error": "Busy.", "x": object()}})
    messages, _ = await read_all(manager, "bad error")
    assert messages[-1]["data"] == {"error": "Busy.", "code": ev.CODE_WORKFLOW_ERROR}
    assert not [r for r in output_errors(caplog) if ev.CODE_WORKFLOW_OUTPUT in r.getMessage()]
    await manager.close()


async def test_text_chunks_are_never_encoded_to_be_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: only a dict item is checked; a chunk of text always encodes."""
    checked: list[object] = []
    real = ev.json_problem

    def counting(data: object) -> str | None:
        checked.append(data)
        return real(data)

    monkeypatch.setattr(ev, "json_problem", counting)
    manager = make_manager(BadOutput({"event": "sources", "data": [1]}))
    messages, _ = await read_all(manager, "bad one custom event")
    assert [m["event"] for m in messages][-3:] == ["sources", "answer_chunk", "workflow_complete"]
    assert checked == [[1], {"suggested_questions": ["Why?"]}]
    await manager.close()


def test_the_wire_encoder_refuses_nan_rather_than_send_it() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            ev.Event("sources", {"x": value}).encode("id", 1)
    assert ev.json_problem({"x": float("nan")}) is not None
    assert ev.json_problem({"x": 1.5}) is None


async def test_a_resumed_stream_replays_only_strict_json() -> None:
    manager = make_manager(BadOutput(BAD_ITEMS["NaN in a custom event"]), resume_grace_sec=5)
    ticket = await manager.submit("bad resumable")
    reader = Reader(manager, manager.resumable(ticket))
    await until(lambda: reader.names[-1:] == ["error"])
    await reader.disconnect()
    again = Reader(manager, manager.resumes.get(ticket.request_id), after=0)
    await until(lambda: again.names[-1:] == ["error"])
    assert again.names == ["queued", "processing", "answer_chunk", "error"]
    assert again.events[-1]["data"]["code"] == ev.CODE_WORKFLOW_OUTPUT
    await again.disconnect()
    await manager.close()


async def test_the_redis_log_of_a_resumable_request_holds_only_strict_json(
    shared: Factory,
) -> None:
    manager = shared(BadOutput(BAD_ITEMS["NaN in workflow_complete"]), resume_grace_sec=5)
    ticket = await manager.submit("bad shared")
    reader = Reader(manager, manager.resumable(ticket))
    await until(lambda: reader.names[-1:] == ["error"])
    await reader.disconnect()
    logs = manager.resumes.shared
    assert logs is not None
    key = logs.log_key(ticket.request_id)  # type: ignore[attr-defined]
    client = logs.client  # type: ignore[attr-defined]
    async with asyncio.timeout(5):
        while True:
            entries = await client.xrange(key)
            if len(entries) == 4:
                break
            await asyncio.sleep(0.02)
    parsed = [strict(fields["e"]) for _, fields in entries]
    assert [p["event"] for p in parsed] == ["queued", "processing", "answer_chunk", "error"]
    assert parsed[-1]["data"]["code"] == ev.CODE_WORKFLOW_OUTPUT
