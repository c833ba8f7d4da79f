"""Answers stored in Django's cache framework (local memory by default, Redis in production)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from .conf import app_settings
from .core.answers.cache import CachedAnswer

logger = logging.getLogger("guest_queue")

KEY_PREFIX = "guest_queue:answer:v1:"


class DjangoAnswerCache:
    """``AnswerCache`` on a Django cache alias; an unreachable cache is a miss, never an error."""

    def __init__(self, alias: str | None = None, ttl: float | None = None) -> None:
        self.alias: str = alias or app_settings.CACHE_ALIAS
        self.ttl: float = float(ttl if ttl is not None else app_settings.CACHE_TTL_SEC)
        self._failing = False

    @staticmethod
    def storage_key(key: str) -> str:
        # Hashed: questions can be long and hold characters memcached keys may not.
        return KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()

    async def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for a question key, or None (also when the cache is down)."""
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
        return _decode(value)

    async def set(self, key: str, answer: CachedAnswer) -> None:
        """Store a complete answer for ``ttl`` seconds."""
        value = {"text": answer.text, "suggested_questions": list(answer.suggested_questions)}
        try:
            await caches[self.alias].aset(self.storage_key(key), value, self.ttl)
        except Exception as exc:
            self._outage(exc)

    def _outage(self, exc: Exception) -> None:
        if not self._failing:
            logger.error("Answer cache %r unavailable (%s); answering without it", self.alias, exc)
            self._failing = True


def _decode(value: Any) -> CachedAnswer | None:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    suggested = value.get("suggested_questions") or []
    return CachedAnswer(value["text"], tuple(str(q) for q in suggested))
