"""How a request ends: one value from the workflow's last item to the stream's last event.

The runner puts an ``Ending`` on the channel when the workflow stops, a
workflow's own ``workflow_complete`` or ``error`` item becomes one, and the
queue makes one when it ends a request itself (timeout, disconnect, shutdown).
The first to reach ``QueueManager.finish`` is the request's ending: its status
and error go to the record, its event (if any) is the last the stream sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import events as ev
from .records import Status


@dataclass(frozen=True, slots=True)
class Ending:
    """A request's final status, its error code and message, and its terminal event."""

    status: Status
    code: str | None = None
    message: str | None = None
    #: The event the stream ends with; None when nobody is left to send it to.
    event: ev.Event | None = None

    @classmethod
    def completed(cls, payload: dict[str, Any] | None = None) -> Ending:
        """The answer is complete; ``payload`` becomes the ``workflow_complete`` data."""
        data = {"suggested_questions": [], **(payload or {})}
        return cls(Status.COMPLETED, event=ev.Event(ev.WORKFLOW_COMPLETE, data))

    @classmethod
    def failed(cls, code: str, message: str, status: Status = Status.FAILED) -> Ending:
        """The request ends without an answer, with an ``error`` event (``message`` is shown)."""
        return cls(status, code, message, ev.error_event(code, message))

    @classmethod
    def timed_out(cls, code: str, limit: float | None, *, waiting: bool, fallback: str) -> Ending:
        """The request waited (``waiting``) or was answered ``limit`` seconds: too long."""
        event = ev.timeout_event(limit, waiting=waiting, fallback=fallback)
        return cls(Status.TIMEOUT, code, event.data["error"], event)

    @classmethod
    def silent(cls, status: Status, code: str, message: str) -> Ending:
        """An ending with no event to send: the client has gone."""
        return cls(status, code, message)

    def with_cached(self, cached: bool) -> Ending:
        """A completed ending whose event says whether the answer came from the cache."""
        if self.event is None or self.status is not Status.COMPLETED:
            return self
        event = ev.Event(self.event.name, {**self.event.data, "cached": cached})
        return Ending(self.status, self.code, self.message, event)

    @property
    def suggested_questions(self) -> tuple[str, ...]:
        data = self.event.data if self.event is not None else None
        return tuple(data.get("suggested_questions") or ()) if isinstance(data, dict) else ()
