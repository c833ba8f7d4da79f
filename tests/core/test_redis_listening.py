"""The Redis link's subscription: what its handlers hear, and how it reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from guest_queue.core.backends.redis import link as link_module
from guest_queue.core.backends.redis.link import RedisLink, RedisOptions

from ..services import PrivateRedis, closed_port
from .conftest import until


@contextlib.asynccontextmanager
async def listening(
    link: RedisLink, channels: tuple[str, ...]
) -> AsyncIterator[dict[str, list[str]]]:
    """``link.listen_all`` running in the background; what each channel's handler heard."""
    heard: dict[str, list[str]] = {channel: [] for channel in channels}
    handlers = {channel: heard[channel].append for channel in channels}
    task = asyncio.create_task(link.listen_all(handlers))
    try:
        yield heard
        assert not task.done(), task  # it never gives up by itself
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.aclose()


async def test_each_handler_hears_a_fresh_start_then_its_own_channel(
    private_redis: PrivateRedis,
) -> None:
    link = RedisLink(RedisOptions(url=private_redis.url, lease_sec=1.5, timeout_sec=0.25))
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        async with listening(link, ("a", "b")) as heard:
            await until(lambda: heard == {"a": [""], "b": [""]})
            for channel, message in (("a", "one"), ("elsewhere", "x"), ("b", "two")):
                await client.publish(channel, message)
            await until(lambda: heard == {"a": ["", "one"], "b": ["", "two"]})
    finally:
        await client.aclose()


async def test_an_idle_subscription_pings_redis_without_keeping_the_process_busy(
    private_redis: PrivateRedis,
) -> None:
    """Redis (and any proxy on the way) sees the idle subscription alive about every second."""
    link = RedisLink(RedisOptions(url=private_redis.url, lease_sec=1.5, timeout_sec=0.25))
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)

    async def subscriber() -> dict[str, Any]:
        [entry] = [c for c in await client.client_list() if c["sub"] != "0"]
        return dict(entry)

    try:
        async with listening(link, ("a",)) as heard:
            await until(lambda: heard == {"a": [""]})
            cpu, started = time.process_time(), time.monotonic()
            await asyncio.sleep(1.6)  # more than the health-check interval (1 s)
            assert time.process_time() - cpu < 0.5 * (time.monotonic() - started)
            assert (await subscriber())["cmd"] == "ping"
    finally:
        await client.aclose()


class FlakyEvents:
    """Stands in for the subscription client: each attempt goes as the script says."""

    def __init__(self, script: list[str]) -> None:
        #: per attempt: "down" (cannot subscribe), "drop" (subscribed, one message, then
        #: the connection drops) or "up"; closing raises after "down" and hangs after "drop".
        self.script = script
        self.attempts: list[float] = []

    def pubsub(self) -> Any:
        return FlakyPubSub(self, self.script[len(self.attempts)])

    async def aclose(self) -> None:
        pass


class FlakyPubSub:
    def __init__(self, events: FlakyEvents, how: str) -> None:
        self.events, self.how, self.sent = events, how, False

    async def subscribe(self, *channels: str) -> None:
        self.channels = channels
        self.events.attempts.append(time.monotonic())
        if self.how == "down":
            raise RedisConnectionError("Error 111 connecting to redis. Connection refused.")

    async def get_message(self, **kwargs: Any) -> Any:
        if self.how == "drop":
            if not self.sent:
                self.sent = True
                return {"channel": self.channels[0], "data": "hello"}
            raise RedisConnectionError("Connection closed by server.")
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        if self.how == "down":
            raise RedisTimeoutError("Timed out closing connection after 0.25")
        if self.how == "drop":
            await asyncio.Event().wait()


async def test_reconnecting_backs_off_doubling_and_starts_over_after_a_good_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_module, "CLOSE_TIMEOUT_SEC", 0.1)
    link = RedisLink(RedisOptions(url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=30))
    events = FlakyEvents(["down", "down", "down", "drop", "up"])
    # Private: the pub/sub connection has no public handle to swap for a flaky one.
    real_events, link._events = link._events, events  # type: ignore[assignment]
    try:
        async with listening(link, ("a", "b")) as heard:
            await until(lambda: len(events.attempts) == 5, timeout=4)
            # A failed close neither stops the loop nor, when it hangs, holds it up for long.
            assert heard == {"a": ["", "hello", ""], "b": ["", ""]}
    finally:
        await real_events.aclose()
    gaps = [b - a for a, b in zip(events.attempts, events.attempts[1:], strict=False)]
    # 0.1 s, then twice as long each time Redis is still down...
    assert 0.1 <= gaps[0] < 0.5, gaps
    assert 0.2 <= gaps[1] < 0.6, gaps
    assert 0.4 <= gaps[2] < 0.8, gaps
    # ...and 0.1 s again after a connection that worked (plus the 0.1 s close bound).
    assert 0.2 <= gaps[3] < 0.6, gaps
