"""What each item a workflow yields means for the guest's stream."""

from __future__ import annotations

import logging

from . import events as ev
from .endings import Ending
from .runner import Busy, Wake

logger = logging.getLogger("guest_queue")

Step = ev.Event | Ending | Busy | None


def translate(item: object) -> Step:
    """An event to send, the end of the request, its upstream busy, or nothing (``None``)."""
    if isinstance(item, str):
        return ev.Event(ev.ANSWER_CHUNK, item) if item else None
    if isinstance(item, Ending | Busy):
        return item
    if isinstance(item, Wake):
        return None
    if not (isinstance(item, dict) and isinstance(item.get("event"), str)):
        logger.error("Workflow yielded an item of type %s; ending the request", type(item).__name__)
        return Ending.failed(ev.CODE_INTERNAL, "Sorry, something went wrong.")
    name, data = item["event"], item.get("data")
    if name == ev.ANSWER_CHUNK and isinstance(data, str):
        return translate(data)
    if name == ev.WORKFLOW_COMPLETE:
        return Ending.completed(dict(data) if isinstance(data, dict) else {})
    if name == ev.ERROR:
        message = data.get("error") if isinstance(data, dict) else None
        return Ending.failed(ev.CODE_WORKFLOW_ERROR, str(message or "The request failed."))
    if name in ev.RESERVED_EVENTS:
        logger.warning("Workflow emitted the reserved event %r; dropped", name)
        return None
    return ev.Event(name, data)
