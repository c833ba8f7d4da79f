"""Parsing and validating what guests send, with errors ready to become JSON responses."""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import HttpRequest

from ..conf import app_settings

# Refused, not removed: C0/C1 controls other than tab and newline (terminal escapes,
# NUL, carriage returns that forge log and CSV lines) and the bidi embeddings and
# overrides U+202A-202E, U+2066-2069 (text that reads differently than it is stored,
# "Trojan Source"). No person types them; silently removing them would hand the
# workflow something other than what was sent, and the client would never know.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class BadRequest(Exception):
    """Input the API refuses: a status code, a machine code and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def read_body(request: HttpRequest) -> bytes:
    """The request body, refused with 413 past ``GUEST_MAX_BODY_BYTES``.

    Checked here rather than by Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``, which
    answers with an HTML page and logs a traceback.
    """
    limit: int = app_settings.MAX_BODY_BYTES
    too_big = BadRequest(413, "body_too_large", f"The request body exceeds {limit} bytes.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_big
    return body


def require_json(request: HttpRequest) -> None:
    """Refuse a body that is not ``application/json`` (any parameters, any case) with 415.

    ``text/plain`` and form bodies are "simple" requests that browsers send across
    sites without a CORS preflight: accepting them would let any third-party page
    make its visitors' browsers fill the queue. ``application/json`` needs a
    preflight, which the site's CORS policy (none by default) refuses.
    """
    if not request.content_type and _bodiless(request):
        return  # nothing to read: the caller says what is missing
    # Django lower-cases the type and drops its parameters (``; charset=utf-8``).
    if request.content_type != "application/json":
        raise BadRequest(
            415, "unsupported_media_type", "Send the request body as application/json."
        )


def _bodiless(request: HttpRequest) -> bool:
    declared = request.META.get("CONTENT_LENGTH") or "0"
    return declared.strip() == "0" and "HTTP_TRANSFER_ENCODING" not in request.META


def parse_query(request: HttpRequest) -> str:
    """The guest's question from a JSON body ``{"query": "..."}``, validated."""
    return query_from(parse_object(request))


def parse_object(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object (any other body is a 400)."""
    require_json(request)
    body = read_body(request)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "invalid_encoding", "The request body is not valid UTF-8.") from None
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested thousands deep
        raise BadRequest(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "invalid_json", 'Send a JSON object such as {"query": "..."}.')
    return data


def query_from(data: dict[str, Any]) -> str:
    """The ``query`` field of a parsed body, validated."""
    if "query" not in data:
        raise BadRequest(400, "missing_query", 'The field "query" is required.')
    query = data["query"]
    if not isinstance(query, str):
        raise BadRequest(400, "invalid_query", 'The field "query" must be a string.')
    if not allowed_text(query):
        raise BadRequest(
            400, "invalid_query", "The query contains characters that are not allowed."
        )
    query = query.strip()
    if not query:
        raise BadRequest(400, "empty_query", 'The field "query" must not be empty.')
    limit: int = app_settings.MAX_QUERY_CHARS
    if len(query) > limit:
        raise BadRequest(400, "query_too_long", f"The query exceeds {limit} characters.")
    return query


def allowed_text(text: str) -> bool:
    """Whether guest text has none of the ``FORBIDDEN`` characters and encodes as UTF-8."""
    return FORBIDDEN.search(text) is None and _encodable(text)


def _encodable(text: str) -> bool:
    # JSON may carry lone surrogates ("\ud800") that no UTF-8 writer accepts later on.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
