"""This process's connections to the shared queue's Redis, and what it knows of their health.

Commands fail fast (no retries inside redis-py, short timeouts) and a failure
keeps Redis "quiet" for a second: new requests are refused at once instead of
each waiting on a connection that is likely to fail too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ...config import ConfigProblem
from ...errors import Unavailable
from ...supervise import stay_cancelled

logger = logging.getLogger("guest_queue")

UNREACHABLE = "The queue service is unreachable; please try again shortly."
#: After a failed command, refuse without trying Redis for this long.
QUIET_AFTER_FAILURE_SEC = 1.0
#: Longest any step of closing may take: shutdown never hangs on Redis.
CLOSE_TIMEOUT_SEC = 2.0


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """The Redis backend's own options (``QueueConfig.backend_options``)."""

    #: The Redis every process sharing the queue points at.
    url: str = ""
    #: Prefix of the shared queue's Redis keys: one queue per prefix.
    prefix: str = "guest_queue"
    #: Seconds a process's slots and places outlive it (renewed every third of this).
    lease_sec: float = 5.0
    #: Seconds any one Redis command may take before Redis counts as unreachable.
    timeout_sec: float = 1.0

    @staticmethod
    def problems(options: Mapping[str, Any]) -> list[ConfigProblem]:
        """What a shared queue cannot run with (type and range checks are the settings')."""
        problems: list[ConfigProblem] = []
        url = options.get("url", "")
        if not (isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://"))):
            problems.append(
                ConfigProblem(
                    "E033",
                    "GUEST_QUEUE_BACKEND's OPTIONS['url'] must be a redis://, rediss:// or "
                    f"unix:// URL, not {url!r}.",
                    "The Redis backend needs the Redis that every process shares.",
                )
            )
        lease, timeout = options.get("lease_sec", 5.0), options.get("timeout_sec", 1.0)
        if _positive(lease) and _positive(timeout) and timeout * 3 >= lease:
            problems.append(
                ConfigProblem(
                    "E037",
                    f"GUEST_QUEUE_BACKEND's OPTIONS['timeout_sec'] ({timeout:g}) must be shorter "
                    f"than a third of OPTIONS['lease_sec'] ({lease:g}).",
                    "Leases are renewed every third of the lease; a slower command loses them.",
                )
            )
        return problems


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


class RedisLink:
    """A client for commands, another for the subscription, and whether Redis answers."""

    def __init__(self, options: RedisOptions) -> None:
        self.retry_after = max(1, math.ceil(options.lease_sec))
        self.renew_every = options.lease_sec / 3
        timeout = options.timeout_sec
        # No retries inside redis-py: a failure must reach the guest as a quick 503.
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
        }
        self.client = Redis.from_url(options.url, socket_timeout=timeout, **common)
        # Subscriptions sit idle for long stretches: no read timeout on their connection.
        self._events = Redis.from_url(
            options.url, health_check_interval=max(1, math.ceil(self.renew_every)), **common
        )
        self.last_ok = time.monotonic()
        self._quiet_until = 0.0
        self._down = False

    def refuse_if_quiet(self) -> None:
        """Raise ``Unavailable`` without trying Redis if it failed a moment ago."""
        if time.monotonic() < self._quiet_until:
            raise Unavailable(UNREACHABLE, self.retry_after)

    async def run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run one of the queue's scripts; ``Unavailable`` if Redis cannot be reached."""
        try:
            reply = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            stay_cancelled()
            self._failed()
            if not self._down:
                self._down = True
                logger.warning("Redis queue unreachable (%s); refusing new requests", exc)
            raise Unavailable(UNREACHABLE, self.retry_after) from exc
        self.last_ok = time.monotonic()
        if self._down:
            self._down = False
            logger.warning("Redis queue reachable again")
        return reply

    def _failed(self) -> None:
        self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_SEC

    async def reachable(self) -> bool:
        """Whether Redis answers a PING now."""
        if time.monotonic() < self._quiet_until:
            return False
        try:
            await self.client.ping()  # type: ignore[misc]
        except (RedisError, OSError):
            self._failed()
            return False
        return True

    async def listen(self, channel: str, on_message: Callable[[str], None]) -> None:
        """Pass every message on ``channel`` to ``on_message`` (``""`` after a reconnect)."""
        await self.listen_all({channel: on_message})

    async def listen_all(self, handlers: Mapping[str, Callable[[str], None]]) -> None:
        """``listen`` on several channels over one subscription, each to its own handler."""
        delay = 0.1
        while True:
            pubsub = self._events.pubsub()
            try:
                await pubsub.subscribe(*handlers)
                for on_message in handlers.values():
                    on_message("")  # Whatever was published while unsubscribed.
                delay = 0.1
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.renew_every
                    )
                    stay_cancelled()  # redis-py may have swallowed a cancel
                    if message is not None:
                        handler = handlers.get(str(message["channel"]))
                        if handler is not None:
                            handler(str(message["data"]))
            except (RedisError, OSError):
                stay_cancelled()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.renew_every)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_SEC):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        for client in (self.client, self._events):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SEC):
                    await client.aclose()
