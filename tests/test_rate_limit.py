"""The rate limit under load: simultaneous questions are counted exactly, windows expire."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.core.cache import caches
from django.test import AsyncClient, override_settings

from guest_queue.guests import ratelimit
from guest_queue.guests.clients import client_of_address
from guest_queue.runtime import get_manager

from .services import delete_prefix, redis_url
from .test_api import SIMPLE, post


class ClientAt(AsyncClient):
    """A test client whose requests come from ``address`` (the ASGI scope's ``client``)."""

    def __init__(self, address: str, **defaults: Any) -> None:
        super().__init__(**defaults)
        self.address = address

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)  # type: ignore[misc]
        scope["client"] = [self.address, 40000]
        return scope


async def burst(client: AsyncClient, count: int) -> list[Any]:
    """``count`` questions sent at once."""
    asks = (post(client, SIMPLE, {"query": f"q{i} chunks=1"}) for i in range(count))
    return list(await asyncio.gather(*asks))


def assert_exactly(responses: list[Any], accepted: int, window: int = 3600) -> None:
    """``accepted`` answered; every other one a 429 rate_limited with Retry-After."""
    codes = [r.status_code for r in responses]
    assert codes.count(200) == accepted, codes
    for refused in (r for r in responses if r.status_code != 200):
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused["Retry-After"]) <= window


@pytest.fixture(autouse=True)
def patient_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst on a busy test machine can keep the loop from a count for half a second;
    then the question goes through uncounted by design. These tests are about counting."""
    monkeypatch.setattr(ratelimit, "CACHE_TIMEOUT_SEC", 10.0)


@pytest.fixture
async def redis_cache() -> AsyncIterator[aioredis.Redis]:
    """The tests' Redis, which the cache ``"redis"`` uses (its own database number: safe
    to empty), read directly: the test opens none of the cache's own connections."""
    raw = aioredis.Redis.from_url(redis_url())
    await raw.flushdb()
    yield raw
    await raw.flushdb()
    await raw.aclose()


def stored(alias: str, key: str) -> str:
    """The name a Django cache stores ``key`` under (its KEY_PREFIX and VERSION)."""
    return caches[alias].make_and_validate_key(key)


@pytest.fixture
async def redis_queue() -> AsyncIterator[str]:
    """The shared queue on the tests' Redis, under a prefix of the test's own."""
    url, prefix = redis_url(), f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    await delete_prefix(url, prefix)


def rate_key(address: str, window: int, prefix: str = "guest_queue:") -> str:
    """The name of the address's counter for the current window (in a cache by default)."""
    index = int(time.time() // window)
    return f"{prefix}rate:{window}:{index}:{client_of_address(address).id}"


@override_settings(GUEST_RATE_LIMIT="5/1h", GUEST_MAX_REQUESTS_PER_CLIENT=0)
async def test_simultaneous_questions_count_exactly_in_local_memory() -> None:
    caches["default"].clear()
    assert_exactly(await burst(ClientAt("198.51.100.7"), 30), 5)
    assert get_manager().status()["rejected_rate_limited"] == 25
    # Another address has its own five.
    assert_exactly(await burst(ClientAt("198.51.100.70"), 8), 5)


@override_settings(
    GUEST_RATE_LIMIT="5/1h", GUEST_MAX_REQUESTS_PER_CLIENT=0, GUEST_HISTORY_ENABLED=False
)
async def test_simultaneous_questions_count_exactly_in_a_redis_cache(
    redis_cache: aioredis.Redis,
) -> None:
    with override_settings(GUEST_CACHE_ALIAS="redis"):
        try:
            assert_exactly(await burst(ClientAt("198.51.100.8"), 30), 5)
            # The count is the cache's, under its key: what any process sharing it reads.
            key = stored("redis", rate_key("198.51.100.8", 3600))
            assert int(await redis_cache.get(key)) == 30
        finally:
            await get_manager().close()  # and the rate counter's Redis connections


async def test_simultaneous_questions_count_exactly_in_the_shared_queues_redis(
    redis_queue: str,
) -> None:
    """On the shared queue the rate counts in its Redis, whatever the cache (here local
    memory, which other processes could not see)."""
    caches["default"].clear()
    with override_settings(
        GUEST_RATE_LIMIT="5/1h",
        GUEST_MAX_REQUESTS_PER_CLIENT=0,
        GUEST_HISTORY_ENABLED=False,
        GUEST_SHUTDOWN_GRACE_SEC=0,
        GUEST_QUEUE_BACKEND={
            "BACKEND": "redis",
            "OPTIONS": {"url": redis_url(), "prefix": redis_queue},
        },
    ):
        try:
            assert_exactly(await burst(ClientAt("198.51.100.9"), 30), 5)
            key = rate_key("198.51.100.9", 3600, prefix="{" + redis_queue + "}:")
            raw = aioredis.Redis.from_url(redis_url())
            try:
                assert int(await raw.get(key)) == 30
                assert 0 < await raw.ttl(key) <= 3601
            finally:
                await raw.aclose()
        finally:
            await get_manager().close()
    assert caches["default"].get(rate_key("198.51.100.9", 3600)) is None


@override_settings(GUEST_RATE_LIMIT="5/30s", GUEST_MAX_REQUESTS_PER_CLIENT=0)
async def test_a_window_expires_with_its_window_in_local_memory() -> None:
    caches["default"].clear()
    await until_early_in_window(30)
    for _ in range(8):
        await post(ClientAt("198.51.100.10"), SIMPLE, {"query": "chunks=1"})
    cache, key = caches["default"], rate_key("198.51.100.10", 30)
    assert cache.get(key) == 8
    # Private: Django's local-memory cache has no public read of a key's expiry.
    expiry = cache._expire_info[stored("default", key)]  # type: ignore[attr-defined]
    assert 0 < expiry - time.time() <= 31


@override_settings(
    GUEST_RATE_LIMIT="5/30s", GUEST_MAX_REQUESTS_PER_CLIENT=0, GUEST_HISTORY_ENABLED=False
)
async def test_a_window_expires_with_its_window_in_a_redis_cache(
    redis_cache: aioredis.Redis,
) -> None:
    """Django's ``aincr`` wrote the count back with the cache's default expiry (300 s)."""
    await until_early_in_window(30)
    with override_settings(GUEST_CACHE_ALIAS="redis"):
        try:
            for _ in range(8):
                await post(ClientAt("198.51.100.11"), SIMPLE, {"query": "chunks=1"})
            key = stored("redis", rate_key("198.51.100.11", 30))
            assert int(await redis_cache.get(key)) == 8
            assert 0 < await redis_cache.ttl(key) <= 31
        finally:
            await get_manager().close()


async def until_early_in_window(window: int) -> None:
    """Wait, if need be, so that the test's questions all fall in one window."""
    into = time.time() % window
    if into > window - 5:
        await asyncio.sleep(window - into + 0.05)
