"""The warning a shared queue gives when its Redis may evict the queue's keys (shown in health)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from guest_queue.core.backends.redis import RedisAdmission
from guest_queue.core.backends.redis import admission as admission_module

from ..services import PrivateRedis, closed_port
from .conftest import GateWorkflow, make_manager

Build = Callable[[str], RedisAdmission]


def eviction_warning(policy: str, limit: int) -> str:
    return (
        f"Redis's maxmemory-policy can evict keys ({policy}, maxmemory {limit} bytes): it may "
        "evict the queue's keys, every one of which has a TTL, and lose guests' places. Set "
        "maxmemory-policy noeviction, or give the queue a Redis of its own."
    )


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    """A shared queue's admission, not started: the tests run its check themselves."""
    built: list[RedisAdmission] = []

    def make(url: str) -> RedisAdmission:
        # A generous command timeout: a busy machine must not turn a slow reply into
        # "not checked" (the tests of an unanswered check bound it themselves).
        options = {"url": url, "lease_sec": 1.5, "timeout_sec": 2.0, "prefix": "eviction"}
        manager = make_manager(GateWorkflow(), backend="redis", backend_options=options)
        assert isinstance(manager.admission, RedisAdmission)
        built.append(manager.admission)
        return manager.admission

    yield make
    for admission in built:
        await admission.link.aclose()


def logged(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_the_eviction_warning_is_given_word_for_word_once_and_dropped_once_fixed(
    build: Build, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    admission = build(private_redis.url)
    try:
        await client.config_set("maxmemory", "100mb")
        await client.config_set("maxmemory-policy", "allkeys-lru")
        with caplog.at_level(logging.WARNING, logger="guest_queue"):
            await admission.check_eviction()
        warning = eviction_warning("allkeys-lru", 100 * 1024 * 1024)
        assert admission.warnings == [warning]
        assert logged(caplog, logging.WARNING) == [warning]
        # Checked again (the admission loop restarted): still one warning, not two.
        await admission.check_eviction()
        assert admission.warnings == [warning]
        # Fixed in Redis, then checked again: the warning goes.
        await client.config_set("maxmemory-policy", "noeviction")
        await admission.check_eviction()
        assert admission.warnings == []
        # Any limit at all lets Redis evict, even a single byte.
        await client.config_set("maxmemory", "1")
        await client.config_set("maxmemory-policy", "volatile-lru")
        await admission.check_eviction()
        assert admission.warnings == [eviction_warning("volatile-lru", 1)]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "reply",
    [
        {"maxmemory": "104857600"},  # no policy reported: Redis's default, noeviction
        {"maxmemory-policy": "allkeys-lru"},  # no limit reported: none
        {"maxmemory-policy": "allkeys-lru", "maxmemory": ""},
    ],
)
async def test_a_server_that_reports_only_part_of_its_memory_settings_is_not_warned_about(
    build: Build, monkeypatch: pytest.MonkeyPatch, reply: dict[str, str]
) -> None:
    """A Redis-compatible server may leave a setting out of CONFIG GET: Redis's default holds."""
    admission = build(f"redis://127.0.0.1:{closed_port()}/0")

    async def config_get(pattern: str) -> dict[str, str]:
        return reply

    monkeypatch.setattr(admission.client, "config_get", config_get)
    await admission.check_eviction()
    assert admission.warnings == []


async def test_an_unreadable_policy_is_logged_and_not_warned_about(
    build: Build, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    admission = build(f"redis://127.0.0.1:{port}/0")
    with caplog.at_level(logging.INFO, logger="guest_queue"):
        await asyncio.wait_for(admission.check_eviction(), 3)
    assert admission.warnings == []
    [message] = logged(caplog, logging.INFO)
    assert re.fullmatch(
        rf"Could not read Redis's maxmemory-policy \(.*127\.0\.0\.1:{port}.*\); not checked",
        message,
    ), message


async def test_a_redis_that_does_not_answer_delays_the_check_a_bounded_time(
    build: Build, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Even with a long command timeout, the queue's start waits at most the close bound."""
    monkeypatch.setattr(admission_module, "CLOSE_TIMEOUT_SEC", 0.1)
    admission = build(f"redis://127.0.0.1:{closed_port()}/0")

    async def forever(*args: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(admission.client, "config_get", forever)
    with caplog.at_level(logging.INFO, logger="guest_queue"):
        await asyncio.wait_for(admission.check_eviction(), 2)
    assert admission.warnings == []
    unread = "Could not read Redis's maxmemory-policy (timed out); not checked"
    assert logged(caplog, logging.INFO) == [unread]
