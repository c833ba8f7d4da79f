"""The optional rate per client (``GUEST_RATE_LIMIT``), counted in the Django cache.

A fixed window per client: ``cache.add`` creates the window's counter, ``incr``
counts (both atomic on Redis and Memcached, so every process sharing the cache
shares the count). Every question that passes validation counts, accepted or
not. A cache that fails or hangs lets the question through (logged): the rate
limit is a guard, not a reason for the chatbot to be down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

from django.core.cache import caches

from ..conf import app_settings

logger = logging.getLogger("guest_queue")

UNITS = {"s": 1, "m": 60, "h": 3600}
PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
#: Longest the cache may take to count before the question goes through uncounted.
CACHE_TIMEOUT_SEC = 0.5
#: A failing cache is logged at most this often.
WARN_EVERY_SEC = 60.0
_last_warning = -math.inf


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


async def over_rate(client: str) -> int | None:
    """Count one question for ``client``; seconds to the window's end when over the rate."""
    rate = parse_rate(app_settings.RATE_LIMIT)
    if rate is None or not client:
        return None
    limit, window = rate
    now = time.time()
    index = int(now // window)
    key = f"guest_queue:rate:{window}:{index}:{client}"
    cache = caches[app_settings.CACHE_ALIAS]
    try:
        async with asyncio.timeout(CACHE_TIMEOUT_SEC):
            if await cache.aadd(key, 1, timeout=window + 1):
                count = 1
            else:
                count = await cache.aincr(key)
    except Exception as exc:  # Any cache failure, ValueError when the key just expired.
        _warn(exc)
        return None
    if count <= limit:
        return None
    return max(1, math.ceil((index + 1) * window - now))


def _warn(exc: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning >= WARN_EVERY_SEC:
        _last_warning = time.monotonic()
        logger.warning(
            "Rate limit not counted (%s: %s); letting questions through",
            type(exc).__name__,
            exc,
        )
