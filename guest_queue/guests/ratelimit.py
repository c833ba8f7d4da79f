"""The optional rate per client (``GUEST_RATE_LIMIT``): fixed windows, counted exactly.

Every question that passes validation counts against its client, accepted or
not. A client keyed by an IPv6 address also counts against the wider networks
around it (``GUEST_IPV6_PREFIX_LIMITS``: its /56 and /48, each allowed a
multiple of the rate), but only once it is within its own rate: a client over
its own rate uses none of its network's. The first limit exceeded refuses the
question with ``429 rate_limited`` until the window ends.

Where the counts live, and what holds there:

- the shared queue's Redis (``GUEST_QUEUE_BACKEND="redis"``): one Lua script
  (``core.backends.redis.rates``) per question; exact across every process and
  host sharing the queue, whatever cache the site has;
- else Django's ``RedisCache``: the same script, over an asyncio connection to
  the cache's first server; exact across every process sharing the cache;
- ``LocMemCache``: its ``add`` and ``incr``, each under the cache's lock, on the
  event loop (no I/O); exact, per process;
- any other cache: its ``add`` and ``incr`` on Django's worker thread (the hop
  its own async methods take). Memcached's and django-redis's are atomic
  (exact across processes); the database and file caches read then write, so
  this process counts one question at a time (exact within it, approximate
  across processes sharing such a cache).

A counter lives for its window plus a second, from its first count. Django's
async ``aincr`` is a read then a write on every built-in backend (and resets
the key's expiry): it is never used. A count that fails or takes longer than
``CACHE_TIMEOUT_SEC`` (2 s) lets the question through (logged at most once a
minute): the rate limit is a guard, not a reason for the chatbot to be down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.cache.backends.redis import RedisCache

from ..conf import app_settings
from ..core.backends.base import WindowCounter
from ..core.errors import RateLimited
from ..core.manager import QueueManager
from .clients import Client

logger = logging.getLogger("guest_queue")

UNITS = {"s": 1, "m": 60, "h": 3600}
PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
#: Longest the count may take before the question goes through uncounted: long enough that
#: a busy server still counts a burst (at 0.5 s, a loaded machine let part of one through),
#: short enough that a hung cache holds no guest for long.
CACHE_TIMEOUT_SEC = 2.0
#: A failing count is logged at most this often.
WARN_EVERY_SEC = 60.0
_last_warning = -math.inf

CLIENT_MESSAGE = "You are asking too often; please wait a moment."
NETWORK_MESSAGE = "Too many questions come from your network; please wait a moment."


def parse_rate(value: object) -> tuple[int, int] | None:
    """``"20/10m"`` → ``(20, 600)``: requests per window of seconds; None if malformed."""
    if not isinstance(value, str):
        return None
    match = PATTERN.match(value)
    if match is None:
        return None
    count, amount, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or amount < 1:
        return None
    return count, amount * UNITS[unit]


async def over_rate(manager: QueueManager, client: Client) -> RateLimited | None:
    """Count one question for ``client``; the refusal when it is over a rate, else None."""
    rate = parse_rate(app_settings.RATE_LIMIT)
    if rate is None or not client.id:
        return None
    limit, window = rate
    now = time.time()
    index = int(now // window)
    base = f"rate:{window}:{index}:"
    keys = [base + client.id, *(base + group for group, _ in client.groups)]
    limits = [limit, *(limit * multiple for _, multiple in client.groups)]
    try:
        async with asyncio.timeout(CACHE_TIMEOUT_SEC):
            over = await counter_for(manager).count(keys, limits, window + 1)
    except Exception as exc:  # Any cache or Redis failure, a timeout.
        _warn(exc)
        return None
    if over == 0:
        return None
    wait = max(1, math.ceil((index + 1) * window - now))
    return RateLimited(CLIENT_MESSAGE if over == 1 else NETWORK_MESSAGE, wait)


_counters: weakref.WeakKeyDictionary[QueueManager, WindowCounter] = weakref.WeakKeyDictionary()


def counter_for(manager: QueueManager) -> WindowCounter:
    """Where ``manager``'s process counts rates: the shared queue's Redis, else the cache."""
    shared = manager.admission.rate_counter()
    if shared is not None:
        return shared
    counter = _counters.get(manager)
    if counter is None:
        counter = _counters[manager] = cache_counter(app_settings.CACHE_ALIAS)
        close = getattr(counter, "close", None)
        if close is not None:
            manager.add_closer(close)
    return counter


def cache_counter(alias: str) -> WindowCounter:
    """The exact counter for the Django cache ``alias`` (see the module's docstring)."""
    cache = caches[alias]
    if isinstance(cache, LocMemCache):
        return LocalMemoryCounter(alias)
    if isinstance(cache, RedisCache):
        try:
            return RedisCacheCounter(cache)
        except Exception as exc:  # Options redis.asyncio does not take: count on a thread.
            logger.warning("Rate limit counted on a thread: %s", exc)
    return ThreadCounter(alias)


def count_in_cache(
    cache: BaseCache, keys: Sequence[str], limits: Sequence[int], ttl_sec: int
) -> int:
    """``WindowCounter.count`` with the cache's own ``add`` and ``incr`` (blocking)."""
    for index, (key, limit) in enumerate(zip(keys, limits, strict=True), 1):
        if _add_or_incr(cache, key, ttl_sec) > limit:
            return index
    return 0


def _add_or_incr(cache: BaseCache, key: str, ttl_sec: int) -> int:
    for _ in range(3):
        if cache.add(key, 1, timeout=ttl_sec):
            return 1
        try:
            return int(cache.incr(key))
        except ValueError:
            continue  # It expired between the two: a new window's counter.
    raise RuntimeError(f"the cache would neither add nor increment {key!r}")


#: The counters' names in a Django cache (the cache adds its own KEY_PREFIX and VERSION).
CACHE_PREFIX = "guest_queue:"


class LocalMemoryCounter:
    """``LocMemCache``: ``add`` and ``incr`` each hold the cache's lock and do no I/O."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    async def count(self, keys: Sequence[str], limits: Sequence[int], ttl_sec: int) -> int:
        names = [CACHE_PREFIX + key for key in keys]
        return count_in_cache(caches[self.alias], names, limits, ttl_sec)


#: One count at a time in this process, for caches whose ``incr`` reads then writes.
_one_at_a_time = threading.Lock()


class ThreadCounter:
    """Any other cache, on Django's worker thread; one count at a time unless its
    ``add`` and ``incr`` are atomic (memcached, django-redis, Django's Redis)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        cache = caches[alias]
        self.atomic = isinstance(cache, BaseMemcachedCache | RedisCache) or type(
            cache
        ).__module__.startswith("django_redis")
        self._count = sync_to_async(self._count_blocking, thread_sensitive=True)

    async def count(self, keys: Sequence[str], limits: Sequence[int], ttl_sec: int) -> int:
        return int(await self._count(keys, limits, ttl_sec))

    def _count_blocking(self, keys: Sequence[str], limits: Sequence[int], ttl_sec: int) -> int:
        cache, names = caches[self.alias], [CACHE_PREFIX + key for key in keys]
        if self.atomic:
            return count_in_cache(cache, names, limits, ttl_sec)
        if not _one_at_a_time.acquire(timeout=CACHE_TIMEOUT_SEC):
            raise TimeoutError("another rate count has held the cache for too long")
        try:
            return count_in_cache(cache, names, limits, ttl_sec)
        finally:
            _one_at_a_time.release()


class RedisCacheCounter:
    """Django's ``RedisCache``: one Lua script on the cache's first (write) server,
    over an asyncio connection of this process's manager (closed with it)."""

    def __init__(self, cache: RedisCache) -> None:
        # Here, not at the top: a site without the ``redis`` extra never gets this far.
        from redis.asyncio import Redis

        from ..core.backends.redis.rates import RedisWindowCounter

        self.alias_cache = cache
        # Django's RedisCacheClient: its servers and pool options.
        client: Any = cache._cache  # type: ignore[attr-defined]
        options = {k: v for k, v in client._pool_options.items() if k != "parser_class"}
        self.client = Redis.from_url(client._servers[0], **options)
        self.counter = RedisWindowCounter(self.client)

    async def count(self, keys: Sequence[str], limits: Sequence[int], ttl_sec: int) -> int:
        # The cache's own key names (KEY_PREFIX, VERSION): ``cache.get`` reads the counts.
        names = [self.alias_cache.make_and_validate_key(CACHE_PREFIX + key) for key in keys]
        return await self.counter.count(names, limits, ttl_sec)

    async def close(self) -> None:
        try:
            async with asyncio.timeout(CACHE_TIMEOUT_SEC * 4):
                await self.client.aclose()
        except Exception as exc:
            logger.info("Closing the rate limit's Redis connections failed: %s", exc)


def _warn(exc: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning >= WARN_EVERY_SEC:
        _last_warning = time.monotonic()
        logger.warning(
            "Rate limit not counted (%s: %s); letting questions through",
            type(exc).__name__,
            exc,
        )
