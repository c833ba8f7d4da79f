"""``max_wait_sec`` in a POST body, the ``429 wait_too_long`` refusal, and the estimates'
error in ``queue/status`` and the metrics, as a client sees them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from guest_queue.runtime import get_manager

from .conftest import read_stream
from .test_metrics import ON, count, outcome, scrape

CHAT = "/api/v1/guest/chat"
SIMPLE = "/api/v1/guest/chat/simple"
STATUS = "/api/v1/guest/queue/status"


async def post(client: AsyncClient, url: str, body: dict[str, Any]) -> Any:
    return await client.post(url, data=json.dumps(body), content_type="application/json")


BODIES = [
    (CHAT, {}),
    (SIMPLE, {}),
    (CHAT, {"resumable": True}),
]


@pytest.mark.parametrize(("url", "extra"), BODIES)
@pytest.mark.parametrize("value", [0, -1, "5", True, [], {"sec": 5}, float("inf"), 11])
@override_settings(GUEST_MAX_QUEUE_WAIT_SEC=10)
async def test_a_bad_max_wait_is_a_clear_400(
    async_client: AsyncClient, url: str, extra: dict[str, Any], value: Any
) -> None:
    response = await post(async_client, url, {"query": "q", "max_wait_sec": value, **extra})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_max_wait" and "max_wait_sec" in body["error"]
    status = (await async_client.get(STATUS)).json()
    assert status["total_requests"] == 0 and status["rejected_requests"] == 0


@override_settings(GUEST_MAX_QUEUE_WAIT_SEC=10)
async def test_a_max_wait_within_the_servers_bound_is_accepted(async_client: AsyncClient) -> None:
    response = await post(async_client, SIMPLE, {"query": "chunks=1", "max_wait_sec": 2.5})
    assert response.status_code == 200 and response.json()["status"] == "completed"


async def test_without_a_server_bound_any_positive_max_wait_is_accepted(
    async_client: AsyncClient,
) -> None:
    response = await post(async_client, SIMPLE, {"query": "chunks=1", "max_wait_sec": 86400})
    assert response.status_code == 200


@override_settings(**ON, GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_a_wait_too_long_is_refused_with_429_and_counted(async_client: AsyncClient) -> None:
    before = await scrape(async_client)
    manager = get_manager()
    for _ in range(20):
        manager.estimator.add_sample(5.0)  # answers have taken 5 s lately
    running = await post(async_client, CHAT, {"query": "sleep=0.3"})
    refused = await post(async_client, SIMPLE, {"query": "hurry", "max_wait_sec": 1})
    assert refused.status_code == 429
    assert refused.json()["code"] == "wait_too_long"
    assert int(refused["Retry-After"]) >= 1
    # One that accepts the wait is queued, and admitted sooner than the 5 s predicted.
    _, patient = await asyncio.gather(
        read_stream(running), post(async_client, SIMPLE, {"query": "chunks=1", "max_wait_sec": 9})
    )
    assert patient.status_code == 200
    status = (await async_client.get(STATUS)).json()
    assert status["rejected_wait_too_long"] == 1 and status["total_requests"] == 2
    error = status["estimated_wait_error_p50_sec"]
    assert error is not None and error > 4  # it waited about 0.3 s of the 5 s said
    after = await scrape(async_client)
    rejected = outcome(after, "rejected", "wait_too_long")
    assert rejected == outcome(before, "rejected", "wait_too_long") + 1
    assert count(after, "wait_estimate_error") == count(before, "wait_estimate_error") + 1
    assert after[("guest_queue_wait_estimate_error_seconds_bucket", (("le", "-2.0"),))] >= 1
