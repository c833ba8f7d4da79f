"""Counters and moving averages behind ``queue/status`` (the wait estimates: ``estimate``)."""

from __future__ import annotations

import math
import time
from collections import deque

from .estimate import ErrorWindow
from .records import RequestRecord, Status

#: How many recent requests the moving averages look at.
WINDOW = 50
NO_DATA_GUESS_SEC = 5.0


class MovingAverage:
    """Mean of the last ``size`` samples; ``None`` before the first one."""

    def __init__(self, size: int = WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._sum = 0.0

    def add(self, value: float) -> None:
        if len(self._samples) == self._samples.maxlen:
            self._sum -= self._samples[0]
        self._samples.append(value)
        self._sum += value

    @property
    def value(self) -> float | None:
        return self._sum / len(self._samples) if self._samples else None


class QueueStats:
    """Counts every accepted request once, by its final status."""

    def __init__(self) -> None:
        self.started_mono = time.monotonic()
        self.total = 0
        self.rejected = 0
        #: Refusals by their code (``queue_full``, ``client_limit``, ``rate_limited``, ...).
        self.rejected_by_code: dict[str, int] = {}
        self.cache_hits = 0
        self.finished: dict[Status, int] = {
            s: 0 for s in (Status.COMPLETED, Status.FAILED, Status.TIMEOUT, Status.CANCELLED)
        }
        self.wait_ms = MovingAverage()
        self.processing_ms = MovingAverage()
        #: Actual minus first predicted wait of the recent requests that waited in line.
        self.estimate_errors = ErrorWindow()

    def reject(self, code: str) -> None:
        """Count a request that was not accepted."""
        self.rejected += 1
        self.rejected_by_code[code] = self.rejected_by_code.get(code, 0) + 1

    def record_finished(self, record: RequestRecord) -> None:
        self.finished[record.status] += 1
        if record.cached:
            self.cache_hits += 1
        if record.started_mono is not None and record.wait_ms is not None:
            self.wait_ms.add(record.wait_ms)
        if record.processing_ms is not None and not record.cached:
            self.processing_ms.add(record.processing_ms)

    def retry_after(self, max_concurrent: int, timeout_sec: float) -> int:
        """Seconds until a place in the queue is likely to free up (for ``Retry-After``).

        From the recent processing time over the slots; before any request has
        finished, a short guess (at most 5 s) rather than the worst case.
        """
        avg = self.processing_ms.value
        per_request = avg / 1000 if avg is not None else min(timeout_sec, NO_DATA_GUESS_SEC)
        per_admission = per_request / max_concurrent
        return max(1, min(300, math.ceil(per_admission)))

    @property
    def uptime_sec(self) -> float:
        return round(time.monotonic() - self.started_mono, 1)
