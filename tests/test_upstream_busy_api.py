"""A busy upstream as a client sees it: ``queued`` again, then the answer; or, once the
retries run out, an ``unavailable`` error (503 on ``chat/simple``), recorded once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from guest_queue.core.manager import MAX_BUSY_RETRIES

from .conftest import read_stream
from .test_api import CHAT, SIMPLE, post
from .test_history import wait_for_rows

pytestmark = pytest.mark.django_db(transaction=True)

BUSY = "tests.workflows.BusyUpstream"


def sse(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(m[len("data: ") :]) for m in raw.decode().split("\n\n") if m.startswith("data: ")
    ]


@override_settings(GUEST_WORKFLOW=BUSY, GUEST_HISTORY_FLUSH_SEC=0.05)
async def test_a_guest_sees_queued_again_then_the_answer(async_client: AsyncClient) -> None:
    response = await post(async_client, CHAT, {"query": "busy 2"})
    assert response.status_code == 200
    events = sse(await read_stream(response))
    assert [e["event"] for e in events] == [
        "queued",
        "processing",
        "queued",
        "processing",
        "queued",
        "processing",
        "answer_chunk",
        "workflow_complete",
    ]
    assert [e["seq"] for e in events] == list(range(1, 9))
    again = events[2]["data"]
    assert again["queue_position"] == 1 and again["estimated_wait_sec"] is not None
    assert events[-2]["data"] == "answered after 3 tries"
    request_id = events[0]["request_id"]
    found = (await async_client.get(f"/api/v1/guest/queue/request/{request_id}")).json()
    assert found["status"] == "completed"
    status = (await async_client.get("/api/v1/guest/queue/status")).json()
    assert (status["total_requests"], status["completed_requests"]) == (1, 1)
    rows = await wait_for_rows("default", 1)
    assert [(str(r.request_id), r.status) for r in rows] == [(request_id, "completed")]


@override_settings(GUEST_WORKFLOW=BUSY, GUEST_HISTORY_FLUSH_SEC=0.05)
async def test_simple_chat_answers_503_once_the_retries_run_out(
    async_client: AsyncClient,
) -> None:
    response = await post(async_client, SIMPLE, {"query": "busy always"})
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["code"] == "unavailable" and body["error"] == "The model is at capacity."
    assert body["status"] == "failed"
    status = (await async_client.get("/api/v1/guest/queue/status")).json()
    assert (status["total_requests"], status["failed_requests"]) == (1, 1)
    rows = await wait_for_rows("default", 1)
    assert rows[0].status == "failed" and rows[0].error_code == "unavailable"


@override_settings(GUEST_WORKFLOW=BUSY)
async def test_simple_chat_answers_after_a_busy_upstream(async_client: AsyncClient) -> None:
    response = await post(async_client, SIMPLE, {"query": f"busy {MAX_BUSY_RETRIES}"})
    assert response.status_code == 200
    assert json.loads(response.content)["answer"] == f"answered after {MAX_BUSY_RETRIES + 1} tries"
