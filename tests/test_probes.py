"""Probes: `health` is readiness (can the guest be served?), `health/live` liveness."""

from __future__ import annotations

import asyncio

from django.test import AsyncClient, override_settings

from guest_queue.runtime import get_manager

from .test_api import SIMPLE, post
from .test_shared_queue_api import down_url

HEALTH = "/api/v1/guest/health"
LIVE = "/api/v1/guest/health/live"


async def test_live_answers_ok(async_client: AsyncClient) -> None:
    response = await async_client.get(LIVE)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@override_settings(GUEST_WORKFLOW="tests.workflows.DownWorkflow")
async def test_workflow_down_fails_readiness_but_not_liveness(async_client: AsyncClient) -> None:
    assert (await async_client.get(HEALTH)).status_code == 503
    live = await async_client.get(LIVE)
    assert live.status_code == 200 and live.json() == {"status": "ok"}


async def test_draining_process_is_alive_but_not_ready(async_client: AsyncClient) -> None:
    await get_manager().drain()
    assert (await async_client.get(HEALTH)).status_code == 503
    assert (await async_client.get(LIVE)).status_code == 200


@override_settings(
    GUEST_QUEUE_BACKEND={"BACKEND": "redis", "OPTIONS": {"url": down_url()}},
    GUEST_SHUTDOWN_GRACE_SEC=0,
)
async def test_unreachable_queue_backend_fails_readiness_but_not_liveness(
    async_client: AsyncClient,
) -> None:
    try:
        assert (await async_client.get(HEALTH)).status_code == 503
        assert (await async_client.get(LIVE)).status_code == 200
    finally:
        await get_manager().close()


async def test_live_answers_while_every_slot_is_busy(async_client: AsyncClient) -> None:
    with override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1):
        busy = asyncio.ensure_future(post(async_client, SIMPLE, {"query": "sleep=0.5 chunks=1"}))
        await asyncio.sleep(0.1)
        status = (await async_client.get("/api/v1/guest/queue/status")).json()
        assert status["active_requests"] == 1
        assert (await async_client.get(LIVE)).status_code == 200
        assert (await busy).status_code == 200


async def test_live_is_get_only(async_client: AsyncClient) -> None:
    response = await async_client.post(LIVE)
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
