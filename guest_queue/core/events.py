"""Stream events and their Server-Sent Events encoding.

Each SSE message is exactly one ``data:`` line holding the whole JSON object,
because the reference frontend parses everything after ``data:`` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Final

QUEUED: Final = "queued"
PROCESSING: Final = "processing"
ANSWER_CHUNK: Final = "answer_chunk"
WORKFLOW_COMPLETE: Final = "workflow_complete"
ERROR: Final = "error"
TIMEOUT: Final = "timeout"

TERMINAL_EVENTS: Final = frozenset({WORKFLOW_COMPLETE, ERROR, TIMEOUT})
#: Names a workflow may not emit itself: the queue owns them.
RESERVED_EVENTS: Final = frozenset({QUEUED, PROCESSING, ERROR, TIMEOUT})

# Error codes carried by ``error`` events.
CODE_WORKFLOW_ERROR: Final = "workflow_error"
CODE_UNAVAILABLE: Final = "unavailable"
CODE_SHUTTING_DOWN: Final = "shutting_down"
CODE_INTERNAL: Final = "internal"
#: The workflow yielded an item that cannot be sent as strict JSON (``NaN``, an object).
CODE_WORKFLOW_OUTPUT: Final = "workflow_output"
#: The guest stopped the request on purpose (``POST chat/<id>/cancel``).
CODE_CANCELLED: Final = "cancelled"
#: A server closing a resumable stream on purpose asks the client to resume it.
RECONNECT: Final = "reconnect"

HEARTBEAT_BYTES: Final = b": keep-alive\n\n"

#: ``json.dumps(..., separators=(",", ":"), allow_nan=False)``'s encoder, built once instead
#: of per call. Strict JSON only: ``NaN`` and ``Infinity`` raise ``ValueError`` instead of
#: going out as bare words a browser's ``JSON.parse`` refuses.
encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
#: The queue's own event names as JSON strings.
_NAMES: Final = {
    name: encode_basestring_ascii(name)
    for name in (QUEUED, PROCESSING, ANSWER_CHUNK, WORKFLOW_COMPLETE, ERROR, TIMEOUT)
}


@dataclass(frozen=True, slots=True)
class Event:
    """One message of a request's stream."""

    name: str
    data: Any

    @property
    def is_terminal(self) -> bool:
        return self.name in TERMINAL_EVENTS

    def encode(self, request_id: str, seq: int, *, with_id: bool = False) -> bytes:
        """The SSE message for this event: one ``data:`` line and a blank line.

        ``seq`` numbers the request's messages from 1; ``with_id`` adds an
        ``id: <seq>`` line after the data (resumed streams only: the seed's
        frontend reads a message as a single ``data:`` line).
        """
        # The bytes of ``json.dumps({"event": name, "data": data, "request_id": request_id,
        # "seq": seq}, separators=(",", ":"))``, put together from their parts: a text
        # chunk (most messages) costs one C call instead of an encoder built per message.
        # ensure_ascii keeps the line free of U+2028 and other separators some parsers split on.
        name, data = self.name, self.data
        data_json = encode_basestring_ascii(data) if type(data) is str else encode_json(data)
        line = (
            f'data: {{"event":{_NAMES.get(name) or encode_json(name)},"data":{data_json},'
            f'"request_id":{encode_basestring_ascii(request_id)},"seq":{int(seq)}}}'
        ).encode()
        if with_id:
            return line + b"\nid: " + str(seq).encode() + b"\n\n"
        return line + b"\n\n"


def json_problem(data: object) -> str | None:
    """Why ``data`` cannot be sent as strict JSON; None when it can.

    ``NaN`` or an infinity, an object JSON has no form for (a set, a ``datetime``), a key
    that is not a string or number, a cycle, nesting too deep: each is a reason.
    """
    try:
        encode_json(data)
    except Exception as exc:  # Whatever a hostile object's methods raise while encoded.
        return f"{type(exc).__name__}: {exc}"
    return None


def error_event(code: str, message: str) -> Event:
    return Event(ERROR, {"error": message, "code": code})


def timeout_event(limit: float | None, *, waiting: bool, fallback: str) -> Event:
    """The ``timeout`` event of a request that waited, or was answered, ``limit`` seconds."""
    text = "waiting in line" if waiting else "answering"
    return Event(
        TIMEOUT,
        {
            "error": f"Request timed out after {limit:g} s of {text}.",
            "timeout_sec": limit,
            "fallback": fallback,
        },
    )
