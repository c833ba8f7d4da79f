"""What the queue knows about one request, and the bounded memory of recent ones."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ANSWER_PREVIEW_CHARS = 500


class Status(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (Status.QUEUED, Status.PROCESSING)


def iso(ts: float | None) -> str | None:
    """A Unix timestamp as an ISO 8601 string in UTC (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(slots=True, eq=False)
class RequestRecord:
    """The life of one accepted request: times, outcome, a preview of the answer."""

    request_id: str
    query: str
    client_hint: str | None = None
    #: Wider groups the client belongs to (its IPv6 /56, /48): (opaque id, multiple of
    #: the per-client cap), narrowest first. Counted with the client, never stored.
    client_groups: tuple[tuple[str, int], ...] = ()
    #: The admission tier it was given (``GUEST_PRIORITY``; "guest" unless a site sets one).
    tier: str = "guest"
    #: The longest wait in line it accepts (its ``max_wait_sec``, else the server's); None:
    #: no bound.
    max_wait_sec: float | None = None
    #: The first wait the queue predicted for it, when it had to wait (for the error metric).
    first_estimate_sec: float | None = None
    status: Status = Status.QUEUED
    arrival_position: int = 0
    cached: bool = False
    error_code: str | None = None
    error_message: str | None = None
    answer_preview: str = ""
    created_at: float = field(default_factory=time.time)
    created_mono: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    started_mono: float | None = None
    finished_at: float | None = None
    finished_mono: float | None = None
    #: When the first answer chunk was produced (for time-to-first-chunk figures).
    first_chunk_mono: float | None = None

    def mark_started(self) -> None:
        self.status = Status.PROCESSING
        self.started_at = time.time()
        self.started_mono = time.monotonic()

    def mark_requeued(self) -> None:
        """Back in line (its upstream was busy): its next admission is its start."""
        self.status = Status.QUEUED

    def mark_finished(self, status: Status, code: str | None, message: str | None) -> None:
        self.status = status
        self.error_code = code
        self.error_message = message
        self.finished_at = time.time()
        self.finished_mono = time.monotonic()

    def add_chunk(self, text: str) -> None:
        """An answer chunk the guest receives: notes when the first one came."""
        if self.first_chunk_mono is None:
            self.first_chunk_mono = time.monotonic()
        self.add_answer(text)

    def add_answer(self, text: str) -> None:
        room = ANSWER_PREVIEW_CHARS - len(self.answer_preview)
        if room > 0:
            self.answer_preview += text[:room]

    @property
    def wait_ms(self) -> int | None:
        end = self.started_mono if self.started_mono is not None else self.finished_mono
        return None if end is None else round((end - self.created_mono) * 1000)

    @property
    def estimate_error_sec(self) -> float | None:
        """Actual wait minus the first predicted one; None: not predicted, or not admitted."""
        if self.first_estimate_sec is None or self.started_mono is None:
            return None
        return self.started_mono - self.created_mono - self.first_estimate_sec

    @property
    def processing_ms(self) -> int | None:
        if self.started_mono is None or self.finished_mono is None:
            return None
        return round((self.finished_mono - self.started_mono) * 1000)

    @property
    def first_chunk_ms(self) -> int | None:
        """From arrival to the first answer chunk; None when no chunk came."""
        if self.first_chunk_mono is None:
            return None
        return round((self.first_chunk_mono - self.created_mono) * 1000)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status.value,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "wait_ms": self.wait_ms,
            "processing_ms": self.processing_ms,
            "cached": self.cached,
        }


class RecentRequests:
    """The newest finished records, at most ``limit`` of them, oldest evicted first."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: OrderedDict[str, RequestRecord] = OrderedDict()

    def add(self, record: RequestRecord) -> None:
        self._items[record.request_id] = record
        self._items.move_to_end(record.request_id)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> RequestRecord | None:
        return self._items.get(request_id)

    def __len__(self) -> int:
        return len(self._items)
