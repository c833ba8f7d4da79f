"""Keyed hashes of what guests send: comparable within one site, not reversible.

Every hash is Django's ``salted_hmac`` with its own purpose string, so a hash
made for one purpose (say the history's question hash) cannot be matched
against another (the answer cache's keys), and none is an HMAC under the raw
``SECRET_KEY``. ``GUEST_HASH_KEY`` gives them a key of their own.

``salted_hmac`` derives its HMAC key (a SHA-256 of purpose and secret) on every
call; here an HMAC set up with the derived key is kept per (purpose, secret) and
copied for each hash, so a changed secret
(``override_settings``, a new ``GUEST_HASH_KEY``) still gets a key of its own.
The hash is the same bytes ``salted_hmac(purpose, text, secret, algorithm="sha256")``
gives (a test compares them).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.utils.encoding import force_bytes

from ..conf import app_settings

QUERY = "guest_queue.history.query"
CLIENT = "guest_queue.history.client"
ANSWER_CACHE = "guest_queue.answer_cache.key"


@lru_cache(maxsize=32)
def _keyed(purpose: str, secret: str | bytes) -> hmac.HMAC:
    """An HMAC-SHA-256 under ``salted_hmac``'s key for ``purpose`` and ``secret``, unfed."""
    key = hashlib.sha256(force_bytes(purpose) + force_bytes(secret)).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


def keyed_hash(purpose: str, text: str) -> str:
    """HMAC-SHA-256 of ``text`` for ``purpose``: 64 hex digits."""
    secret = app_settings.HASH_KEY or settings.SECRET_KEY
    # A copy of a keyed HMAC skips setting the key up again (OpenSSL's slowest part here).
    mac = _keyed(purpose, secret).copy()
    mac.update(text.encode())
    return mac.hexdigest()
