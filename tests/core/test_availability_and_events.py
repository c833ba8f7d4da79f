"""A workflow marked down comes back; event encoding can never break the SSE framing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core import availability
from guest_queue.core import events as ev
from guest_queue.core.availability import AvailabilityProbe
from guest_queue.core.errors import Unavailable
from guest_queue.workflows.base import WorkflowItem, WorkflowRequest, WorkflowUnavailable

from .conftest import Stream, make_manager


class Flapping:
    """Up or down as the test says; counts its probes."""

    def __init__(self) -> None:
        self.up = True
        self.fail_streams = False
        self.probes = 0

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        if self.fail_streams:
            raise WorkflowUnavailable("The model is down.")
        yield "fine"

    async def is_available(self) -> bool:
        self.probes += 1
        return self.up


async def test_a_workflow_marked_down_is_probed_again_after_the_cache_period() -> None:
    workflow = Flapping()
    probe = AvailabilityProbe(workflow, ttl=0.2)
    probe.mark_down()
    assert await probe.check() is False  # within the period: no probe, still down
    assert workflow.probes == 0
    await asyncio.sleep(0.25)
    assert await probe.check() is True  # probed again, and it is back
    assert workflow.probes == 1
    assert await probe.check() is True  # cached again
    assert workflow.probes == 1


async def test_unavailable_mid_stream_refuses_new_requests_until_the_service_is_back() -> None:
    workflow = Flapping()
    manager = make_manager(workflow, availability_cache_sec=0.2)
    workflow.fail_streams = True  # its probe still says up: only the stream knows
    first = Stream(manager, await manager.submit("first"))
    assert (await first.done())[-1] == ev.ERROR
    assert first.events[-1].data == {"error": "The model is down.", "code": ev.CODE_UNAVAILABLE}
    with pytest.raises(Unavailable) as refused:
        await manager.submit("second")
    assert refused.value.status_code == 503 and refused.value.retry_after == 1
    workflow.fail_streams = False
    await asyncio.sleep(0.25)
    again = Stream(manager, await manager.submit("third"))
    assert (await again.done())[-1] == ev.WORKFLOW_COMPLETE


def test_answer_text_can_never_break_the_sse_framing() -> None:
    text = 'line\nbreak\r\n\u2028sep\u2029\u0085 "quoted" data: fake\n\nviệt 🧬'
    wire = ev.Event(ev.ANSWER_CHUNK, text).encode("rid", 1)
    assert wire.startswith(b"data: ") and wire.endswith(b"\n\n")
    line = wire[len(b"data: ") : -2]
    # One line of pure ASCII: no separator any SSE or JSON-lines parser could split on.
    assert line.isascii() and b"\n" not in line and b"\r" not in line
    assert json.loads(line)["data"] == text


class Down:
    """A workflow whose service says it is down."""

    async def stream(self, request: Any) -> Any:
        yield "never asked"

    async def is_available(self) -> bool:
        return False


@pytest.mark.parametrize(("period", "retry_after"), [(0.0, 1), (2.5, 3)])
async def test_a_workflow_that_is_down_is_a_503_to_come_back_after_the_probe_period(
    period: float, retry_after: int
) -> None:
    manager = make_manager(Down(), availability_cache_sec=period)
    with pytest.raises(Unavailable) as refused:
        await manager.submit("anyone there?")
    assert str(refused.value) == "The assistant is temporarily unavailable."
    assert refused.value.retry_after == retry_after
    assert manager.status()["rejected_requests"] == 1
    await manager.close()


async def test_a_probe_that_never_answers_counts_as_down_after_its_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Hanging(Down):
        async def is_available(self) -> bool:
            await asyncio.Event().wait()
            return True

    monkeypatch.setattr(availability, "PROBE_TIMEOUT_SEC", 0.1)
    manager = make_manager(Hanging())
    with pytest.raises(Unavailable):
        await asyncio.wait_for(manager.submit("anyone there?"), 2)
    assert [r.getMessage() for r in caplog.records] == ["Workflow availability probe failed"]
    await manager.close()
