"""The admission tier of a request: ``GUEST_PRIORITY`` names it, ``GUEST_TIERS`` weighs it.

``GUEST_PRIORITY`` is the dotted path of a function ``(request) -> tier name``
(signed-in customers ahead of anonymous guests, say). Without it everyone is
``guest``. A name ``GUEST_TIERS`` does not list, or a function that fails, puts
the request in ``guest`` with a logged warning: a bug there never becomes a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

from django.http import HttpRequest
from django.utils.module_loading import import_string

from ..conf import app_settings
from ..core.ordering import DEFAULT_TIER

logger = logging.getLogger("guest_queue")

Priority = Callable[[HttpRequest], object]


@cache
def _load(path: str) -> Priority:
    function: Priority = import_string(path)
    return function


def tier_of(request: HttpRequest) -> str:
    """The request's tier: what ``GUEST_PRIORITY`` returns, when ``GUEST_TIERS`` knows it."""
    path = app_settings.PRIORITY
    if not path:
        return DEFAULT_TIER
    try:
        tier = _load(path)(request)
    except Exception:
        logger.exception("GUEST_PRIORITY %s failed; ordering the request as %r", path, DEFAULT_TIER)
        return DEFAULT_TIER
    if tier is None:
        return DEFAULT_TIER
    if not isinstance(tier, str) or tier not in app_settings.TIERS:
        logger.warning(
            "GUEST_PRIORITY %s returned %r, not a tier in GUEST_TIERS; ordering the request as %r",
            path,
            tier,
            DEFAULT_TIER,
        )
        return DEFAULT_TIER
    return tier
