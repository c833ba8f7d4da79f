"""The optional fields of a ``POST chat`` body beside the question: language, history and
the longest acceptable wait."""

from __future__ import annotations

import math
import re
from typing import Any

from django.http import HttpRequest

from ..conf import app_settings
from .validation import BadRequest, allowed_text

#: A short language tag: "vi", "en", "en-US", "zh-Hant-TW".
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")
ROLES = frozenset({"user", "assistant"})


def language_of(data: dict[str, Any], request: HttpRequest) -> str | None:
    """The body's ``"language"``, else the first tag of ``Accept-Language`` (if it is one)."""
    value = data.get("language")
    if value is not None:
        if not isinstance(value, str) or not LANGUAGE_TAG.fullmatch(value):
            raise BadRequest(
                400, "invalid_language", 'The field "language" must be a tag such as "vi".'
            )
        return value
    # META, not ``request.headers``: building that mapping costs more than the rest here.
    header = request.META.get("HTTP_ACCEPT_LANGUAGE", "")
    first = header.split(",", 1)[0].split(";", 1)[0].strip()
    return first if LANGUAGE_TAG.fullmatch(first) else None


def history_of(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The body's ``"history"``: earlier turns ``[{"role", "content"}]``, bounded."""
    value = data.get("history")
    if value is None:
        return ()
    turns: int = app_settings.MAX_HISTORY_TURNS
    chars: int = app_settings.MAX_QUERY_CHARS
    if not isinstance(value, list) or len(value) > turns:
        raise BadRequest(
            400, "invalid_history", f'The field "history" must be a list of at most {turns} turns.'
        )
    history = []
    for turn in value:
        if not (
            isinstance(turn, dict)
            and set(turn) == {"role", "content"}
            and isinstance(turn["role"], str)
            and turn["role"] in ROLES
            and isinstance(turn["content"], str)
            and 0 < len(turn["content"]) <= chars
        ):
            raise BadRequest(
                400,
                "invalid_history",
                'Each turn of "history" must be {"role": "user" or "assistant", '
                f'"content": text of at most {chars} characters}}.',
            )
        if not allowed_text(turn["content"]):
            raise BadRequest(
                400,
                "invalid_history",
                'A turn of "history" contains characters that are not allowed '
                "(control or bidirectional-override characters).",
            )
        history.append((turn["role"], turn["content"]))
    return tuple(history)


def max_wait_of(data: dict[str, Any]) -> float | None:
    """The body's ``"max_wait_sec"``: a positive number of seconds, at most the server's
    ``GUEST_MAX_QUEUE_WAIT_SEC`` when one is set; None when absent."""
    value = data.get("max_wait_sec")
    if value is None:
        return None
    bound = app_settings.MAX_QUEUE_WAIT_SEC
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise BadRequest(
            400, "invalid_max_wait", 'The field "max_wait_sec" must be a positive number.'
        )
    if bound and value > bound:
        raise BadRequest(
            400,
            "invalid_max_wait",
            f'The field "max_wait_sec" must be at most {bound:g} (the server\'s longest wait).',
        )
    return float(value)
