"""OpenAIChatWorkflow against a real local server speaking the streaming protocol."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from guest_queue.core.config import QueueConfig
from guest_queue.core.errors import Unavailable
from guest_queue.core.manager import QueueManager
from guest_queue.workflows.base import (
    WorkflowBusy,
    WorkflowError,
    WorkflowRequest,
    WorkflowUnavailable,
)
from guest_queue.workflows.openai import (
    DEFAULT_SYSTEM_PROMPT,
    OpenAIChatWorkflow,
    OpenAISettings,
    busy_for_sec,
)

from ..fake_openai import FakeOpenAI
from .conftest import Stream

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.stop()


def workflow(url: str, **settings: Any) -> OpenAIChatWorkflow:
    return OpenAIChatWorkflow(OpenAISettings(base_url=url, api_key=KEY, model="m", **settings))


async def run(flow: OpenAIChatWorkflow, query: str) -> list[Any]:
    return [item async for item in flow.stream(WorkflowRequest("rid", query))]


async def test_streams_deltas_then_completes(upstream: FakeOpenAI) -> None:
    items = await run(workflow(upstream.url), "hi")
    assert items[:3] == ["Hello", " guest", "!"]
    assert items[3] == {"event": "workflow_complete", "data": {"suggested_questions": []}}
    sent = upstream.requests[0]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"]["model"] == "m" and sent["body"]["stream"] is True
    assert sent["body"]["messages"][0]["role"] == "system"
    # The app's default prompt is neutral: no site's name or subject in it.
    prompt = sent["body"]["messages"][0]["content"]
    assert prompt == DEFAULT_SYSTEM_PROMPT and "website's visitors" in prompt
    assert not re.search("genestory|genetic|dna|medical", prompt, re.IGNORECASE)


async def test_earlier_turns_are_sent_as_messages(upstream: FakeOpenAI) -> None:
    history = (("user", "What is DNA?"), ("assistant", "A molecule."))
    request = WorkflowRequest("rid", "hi", language="vi", history=history)
    items = [item async for item in workflow(upstream.url).stream(request)]
    assert items[0] == "Hello"
    messages = upstream.requests[0]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [*history, ("user", "hi")]


async def test_slow_tokens_arrive_one_by_one(upstream: FakeOpenAI) -> None:
    flow = workflow(upstream.url)
    loop = asyncio.get_running_loop()
    times = []
    async for item in flow.stream(WorkflowRequest("rid", "slow")):
        if isinstance(item, str):
            times.append(loop.time())
    assert len(times) == 3 and times[-1] - times[0] >= 0.3


async def test_suggestions_from_a_second_completion_or_a_fixed_list(upstream: FakeOpenAI) -> None:
    items = await run(workflow(upstream.url, suggestions="completion"), "hi")
    assert items[-1]["data"]["suggested_questions"] == [
        "What is a gene?",
        "How long do results take?",
        "Is my data safe?",
    ]
    fixed = workflow(upstream.url, suggestions="fixed", fixed_suggestions=("A?", "B?"))
    assert (await run(fixed, "hi"))[-1]["data"]["suggested_questions"] == ["A?", "B?"]


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("401", "The assistant service refused our credentials."),
        ("403", "The assistant service refused our credentials."),
        ("500", "The assistant service failed (500): The model crashed ***"),
        ("malformed", "The assistant service sent a malformed response."),
        ("fail-mid", "The connection to the assistant service was interrupted."),
        ("no-done", "The assistant service ended the answer unexpectedly."),
    ],
)
async def test_upstream_failures_become_clean_workflow_errors(
    upstream: FakeOpenAI, scenario: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="guest_queue")
    with pytest.raises(WorkflowError) as failure:
        await run(workflow(upstream.url), scenario)
    assert failure.value.message == expected
    assert KEY not in caplog.text and "sk-secret" not in caplog.text


@pytest.mark.parametrize(
    ("scenario", "retry_after"),
    [
        ("429", None),
        ("429 7", 7.0),
        ("503 1.5", 1.5),
        ("503 soon", None),
        ("429 -3", 0.0),
    ],
)
async def test_a_busy_upstream_is_workflow_busy_with_its_retry_after(
    upstream: FakeOpenAI, scenario: str, retry_after: float | None
) -> None:
    with pytest.raises(WorkflowBusy) as busy:
        await run(workflow(upstream.url), scenario)
    assert busy.value.retry_after_sec == retry_after
    status = scenario.split()[0]
    expected = f"The assistant service is busy ({status}): Rate limit reached for key ***"
    assert busy.value.message == expected


async def test_a_retry_after_may_be_an_http_date(upstream: FakeOpenAI) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with pytest.raises(WorkflowBusy) as busy:
        await run(workflow(upstream.url), f"429 {when}")
    assert busy.value.retry_after_sec is not None
    assert 25 < busy.value.retry_after_sec <= 30


def test_openais_retry_after_ms_is_read_first() -> None:
    headers = httpx.Headers({"Retry-After": "1", "retry-after-ms": "250"})
    assert busy_for_sec(headers) == 0.25
    assert busy_for_sec(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert busy_for_sec(httpx.Headers({})) is None


async def test_a_guest_whose_upstream_answers_429_waits_in_line_and_gets_the_answer(
    upstream: FakeOpenAI,
) -> None:
    upstream.busy_replies = [("429", "0.05"), ("503", "0.05")]
    manager = QueueManager(QueueConfig(), workflow(upstream.url))
    stream = Stream(manager, await manager.submit("hi"))
    names = await stream.done()
    assert names.count("queued") == 3 and names.count("processing") == 3
    assert names[-1] == "workflow_complete"
    assert "".join(e.data for e in stream.events if e.name == "answer_chunk") == "Hello guest!"
    assert manager.status()["completed_requests"] == 1


async def test_an_upstream_silent_past_the_read_timeout_is_a_clean_error(
    upstream: FakeOpenAI,
) -> None:
    # "slow" sends its headers, then waits 0.2 s before each token.
    with pytest.raises(WorkflowError) as failure:
        await run(workflow(upstream.url, read_timeout_sec=0.05), "slow")
    assert failure.value.message == "The assistant service took too long to respond."


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_refused_connection_is_unavailable() -> None:
    flow = workflow(closed_port_url())
    with pytest.raises(WorkflowUnavailable):
        await run(flow, "hi")
    assert await flow.is_available() is False


async def test_availability_probes_models(upstream: FakeOpenAI) -> None:
    flow = workflow(upstream.url)
    assert await flow.is_available() is True
    upstream.models_status = 503
    assert await flow.is_available() is False


async def test_cancelling_the_request_closes_the_upstream_stream(upstream: FakeOpenAI) -> None:
    manager = QueueManager(QueueConfig(), workflow(upstream.url))
    stream = Stream(manager, await manager.submit("endless"))
    async with asyncio.timeout(5):
        while stream.names.count("answer_chunk") < 3:
            await asyncio.sleep(0.01)
    await stream.disconnect()
    # The fake server notices on its next write that the connection is gone.
    assert await asyncio.to_thread(upstream.disconnected.wait, 5)
    assert manager.status()["cancelled_requests"] == 1


async def test_unreachable_service_is_refused_before_the_stream() -> None:
    manager = QueueManager(QueueConfig(), workflow(closed_port_url()))
    with pytest.raises(Unavailable):
        await manager.submit("hi")
