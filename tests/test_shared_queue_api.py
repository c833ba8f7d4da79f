"""The API on the shared (Redis) queue: same contract, whole-queue figures, clean 503s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from django.test import AsyncClient, override_settings

from guest_queue.runtime import get_manager

from .services import PrivateRedis, closed_port, delete_prefix, redis_url
from .test_api import CHAT, SIMPLE, post


@pytest.fixture
async def shared_queue(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """The redis backend for one test: the real Redis, or the URL the test passes."""
    given = getattr(request, "param", None)
    url, prefix = given or redis_url(), f"test-{uuid.uuid4().hex[:12]}"
    with override_settings(
        GUEST_QUEUE_BACKEND={"BACKEND": "redis", "OPTIONS": {"url": url, "prefix": prefix}},
        GUEST_SHUTDOWN_GRACE_SEC=0,
        # These tests have no database: the history writer would retry until its flush timeout.
        GUEST_HISTORY_ENABLED=False,
    ):
        yield
        await get_manager().close()
    if not given:
        await delete_prefix(url, prefix)


@pytest.mark.usefixtures("shared_queue")
async def test_answers_and_reports_the_whole_queue(async_client: AsyncClient) -> None:
    answer = await post(async_client, SIMPLE, {"query": "chunks=2"})
    assert answer.status_code == 200 and answer.json()["answer"] == "chunk0 chunk1 "
    status = (await async_client.get("/api/v1/guest/queue/status")).json()
    assert status["backend"] == "redis" and status["queue_reachable"] is True
    assert status["processes"] >= 1 and status["process"]["completed_requests"] == 1
    assert status["completed_requests"] >= 1 and status["queue_size"] == 0
    health = await async_client.get("/api/v1/guest/health")
    assert health.status_code == 200
    assert health.json()["queue_backend"] == {"name": "redis", "reachable": True}


def down_url() -> str:
    return f"redis://127.0.0.1:{closed_port()}/0"


@pytest.mark.parametrize("shared_queue", [down_url()], indirect=True, ids=["redis-down"])
@pytest.mark.usefixtures("shared_queue")
async def test_unreachable_redis_is_a_json_503_with_retry_after(
    async_client: AsyncClient,
) -> None:
    for url in (CHAT, SIMPLE):
        response: Any = await post(async_client, url, {"query": "hello"})
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        assert int(response["Retry-After"]) >= 1
    health = await async_client.get("/api/v1/guest/health")
    assert health.status_code == 503 and "Retry-After" in health
    assert health.json()["queue_backend"] == {"name": "redis", "reachable": False}
    status = (await async_client.get("/api/v1/guest/queue/status")).json()
    assert status["queue_reachable"] is False and status["rejected_requests"] == 2


async def test_health_shows_an_eviction_policy_that_could_drop_the_queue(
    async_client: AsyncClient, private_redis: PrivateRedis
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory", "100mb")
    client.config_set("maxmemory-policy", "allkeys-lfu")
    client.close()
    with override_settings(
        GUEST_QUEUE_BACKEND={"BACKEND": "redis", "OPTIONS": {"url": private_redis.url}},
        GUEST_SHUTDOWN_GRACE_SEC=0,
    ):
        try:
            get_manager().start()
            await asyncio.sleep(0.3)
            body = (await async_client.get("/api/v1/guest/health")).json()
        finally:
            await get_manager().close()
    assert body["status"] == "ok"
    (warning,) = body["warnings"]
    assert "allkeys-lfu" in warning and "noeviction" in warning


@pytest.mark.usefixtures("shared_queue")
async def test_health_has_no_warnings_on_a_dedicated_redis(async_client: AsyncClient) -> None:
    body = (await async_client.get("/api/v1/guest/health")).json()
    assert body["warnings"] == []


@pytest.mark.parametrize("shared_queue", [down_url()], indirect=True, ids=["redis-down"])
@pytest.mark.usefixtures("shared_queue")
async def test_resume_and_cancel_with_redis_down_are_json_503s(async_client: AsyncClient) -> None:
    request_id = str(uuid.uuid4())
    for response in (
        await async_client.get(f"{CHAT}/{request_id}/events"),
        await async_client.post(f"{CHAT}/{request_id}/cancel"),
    ):
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "unavailable"
        assert int(response["Retry-After"]) >= 1


@pytest.mark.usefixtures("shared_queue")
async def test_a_resume_through_another_process_checks_the_seq_like_a_local_one(
    async_client: AsyncClient,
) -> None:
    from guest_queue.core.events import Event

    manager = get_manager()
    manager.start()
    shared = manager.resumes.shared
    assert shared is not None
    request_id = str(uuid.uuid4())  # driven by "another process": only its log is here
    for seq in (5, 6, 7):  # the first four were trimmed
        shared.append(request_id, seq, Event("answer_chunk", "x"))
    async with asyncio.timeout(5):
        while await shared.bounds(request_id) != (5, 7):
            await asyncio.sleep(0.02)
    ahead = await async_client.get(f"{CHAT}/{request_id}/events", {"after": "8"})
    assert ahead.status_code == 400 and ahead.json()["code"] == "invalid_after"
    gone = await async_client.get(f"{CHAT}/{request_id}/events", {"after": "2"})
    assert gone.status_code == 410 and gone.json()["code"] == "log_trimmed"
