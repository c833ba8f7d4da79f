"""Answers stored in Django's cache framework (local memory by default, Redis in production)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from ..conf import app_settings
from ..core.answers.cache import CachedAnswer
from ..guests.hashing import ANSWER_CACHE, keyed_hash

logger = logging.getLogger("guest_queue")

# v2: keys are keyed hashes (v1 keys were plain SHA-256 of a looser normal form).
KEY_PREFIX = "guest_queue:answer:v2:"
#: Answers the in-process front holds at most.
RECENT_SIZE = 1024
#: How long the in-process front keeps an answer (never longer than the cache's TTL).
RECENT_SEC = 10.0


class RecentAnswers:
    """The answers this process read or stored in the last ``ttl`` seconds, newest kept.

    In front of a cache over the network (Redis, memcached, a database): a hot
    question is answered from memory, without the round trip, nor the worker
    thread Django's cache backends hop to for it.
    """

    def __init__(self, ttl: float, size: int = RECENT_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()

    def get(self, key: str) -> CachedAnswer | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._items[key] = (time.monotonic() + self.ttl, answer)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class DjangoAnswerCache:
    """``AnswerCache`` on a Django cache alias; an unreachable cache is a miss, never an error."""

    def __init__(self, alias: str | None = None, ttl: float | None = None) -> None:
        self.alias: str = alias or app_settings.CACHE_ALIAS
        self.ttl: float = float(ttl if ttl is not None else app_settings.CACHE_TTL_SEC)
        self._failing = False
        local = min(RECENT_SEC, self.ttl)
        in_memory = isinstance(caches[self.alias], LocMemCache)
        # Local memory is in this process already: a front would only duplicate it.
        self.recent = RecentAnswers(local) if local > 0 and not in_memory else None

    @staticmethod
    def storage_key(key: str) -> str:
        # Hashed: questions can be long and hold characters memcached keys may not. Keyed:
        # whoever reads the cache cannot test guesses of what guests asked.
        return KEY_PREFIX + keyed_hash(ANSWER_CACHE, key)

    async def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for a question key, or None (also when the cache is down)."""
        if self.recent is not None and (answer := self.recent.get(key)) is not None:
            return answer
        backend = caches[self.alias]
        try:
            if isinstance(backend, LocMemCache):
                # In-process memory, no I/O: skip aget's hop to a worker thread.
                value = backend.get(self.storage_key(key))
            else:
                value = await backend.aget(self.storage_key(key))
        except Exception as exc:
            self._outage(exc)
            return None
        self._failing = False
        answer = _decode(value)
        if answer is not None and self.recent is not None:
            self.recent.put(key, answer)
        return answer

    async def set(self, key: str, answer: CachedAnswer) -> None:
        """Store a complete answer for ``ttl`` seconds."""
        value = {"text": answer.text, "suggested_questions": list(answer.suggested_questions)}
        try:
            await caches[self.alias].aset(self.storage_key(key), value, self.ttl)
        except Exception as exc:
            self._outage(exc)
            return
        if self.recent is not None:
            self.recent.put(key, answer)

    def _outage(self, exc: Exception) -> None:
        if not self._failing:
            logger.error("Answer cache %r unavailable (%s); answering without it", self.alias, exc)
            self._failing = True


def _decode(value: Any) -> CachedAnswer | None:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    suggested = value.get("suggested_questions") or []
    return CachedAnswer(value["text"], tuple(str(q) for q in suggested))
