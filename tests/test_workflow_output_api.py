"""Workflow output that strict JSON cannot carry, as a client sees it: every message parses
with a strict parser, the request ends with ``workflow_output``, the slot is freed."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from .conftest import read_stream
from .test_api import CHAT, SIMPLE, post

WORKFLOW = "tests.workflows.UnsendableOutput"
QUERIES = ["nan", "nan-complete", "object"]


def _refuse(word: str) -> None:
    raise ValueError(f"not strict JSON: {word}")


def strict(text: str | bytes) -> Any:
    """Parse as a browser's ``JSON.parse`` does: ``NaN`` and ``Infinity`` are errors."""
    return json.loads(text, parse_constant=_refuse)


def strict_sse(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for message in raw.decode().split("\n\n"):
        if message.strip() and not message.startswith(":"):
            assert message.startswith("data: ") and "\n" not in message, message
            events.append(strict(message[len("data: ") :]))
    return events


def naming_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WORKFLOW in r.getMessage()]


@pytest.mark.parametrize("query", QUERIES)
@override_settings(GUEST_WORKFLOW=WORKFLOW, GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_the_stream_ends_with_a_workflow_output_error_in_strict_json(
    async_client: AsyncClient, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    caplog.set_level(logging.INFO, logger="guest_queue")
    response = await post(async_client, CHAT, {"query": query})
    assert response.status_code == 200
    events = strict_sse(await read_stream(response))
    assert [e["event"] for e in events] == ["queued", "processing", "answer_chunk", "error"]
    assert events[-1]["data"]["code"] == "workflow_output" and events[-1]["data"]["error"]
    request_id = events[0]["request_id"]
    found = (await async_client.get(f"/api/v1/guest/queue/request/{request_id}")).json()
    assert found["status"] == "failed"
    status = (await async_client.get("/api/v1/guest/queue/status")).json()
    assert (status["failed_requests"], status["completed_requests"]) == (1, 0)
    lines = naming_lines(caplog)
    assert len(lines) == 1 and request_id in lines[0]
    # The one slot is free again: the next question is answered.
    after = strict_sse(await read_stream(await post(async_client, CHAT, {"query": "fine"})))
    assert after[-1]["event"] == "workflow_complete"


@pytest.mark.parametrize("query", QUERIES)
@override_settings(GUEST_WORKFLOW=WORKFLOW, GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_simple_chat_answers_502_workflow_output_in_strict_json(
    async_client: AsyncClient, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    caplog.set_level(logging.INFO, logger="guest_queue")
    response = await post(async_client, SIMPLE, {"query": query})
    assert response.status_code == 502
    body = strict(response.content)
    assert body["code"] == "workflow_output" and body["status"] == "failed" and body["error"]
    assert response.get("Retry-After") is None  # accepted: not to be resent blindly
    assert len(naming_lines(caplog)) == 1
    again = await post(async_client, SIMPLE, {"query": "fine"})
    assert again.status_code == 200
    assert strict(again.content)["answer"] == "Before after."
