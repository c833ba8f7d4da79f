"""Keyed hashes of what guests send: comparable within one site, not reversible.

Every hash is Django's ``salted_hmac`` with its own purpose string, so a hash
made for one purpose (say the history's question hash) cannot be matched
against another (the answer cache's keys), and none is an HMAC under the raw
``SECRET_KEY``. ``GUEST_HASH_KEY`` gives them a key of their own.
"""

from __future__ import annotations

from django.utils.crypto import salted_hmac

from .conf import app_settings

QUERY = "guest_queue.history.query"
CLIENT = "guest_queue.history.client"
ANSWER_CACHE = "guest_queue.answer_cache.key"


def keyed_hash(purpose: str, text: str) -> str:
    """HMAC-SHA-256 of ``text`` for ``purpose``: 64 hex digits."""
    secret = app_settings.HASH_KEY or None  # None: salted_hmac uses SECRET_KEY
    return salted_hmac(purpose, text, secret=secret, algorithm="sha256").hexdigest()
