"""The queue's part that knows how long guests wait: the estimates it announces, the
refusal at the door of a wait longer than a request accepts, and how right it was."""

from __future__ import annotations

import math
import time

from .backends.base import Admission, Ticket
from .config import QueueConfig
from .errors import WaitTooLong
from .estimate import HORIZON, Forecast, WaitEstimate, WaitEstimator
from .stats import QueueStats

#: Estimates asked within this long of each other, with the same slots busy and line
#: length, share one forecast without looking at the answers in flight again: a
#: position pass that moves thousands of waiters looks once (the forecast still counts
#: down meanwhile).
PASS_SEC = 0.05


class Waits:
    """Wait estimates from the admission's slots and line and the recent answers."""

    def __init__(self, config: QueueConfig, admission: Admission, stats: QueueStats) -> None:
        self.config = config
        self.admission = admission
        self.stats = stats
        self.estimator = WaitEstimator()
        self._admissions = 0
        #: The last forecast asked for: when, for which state, the forecast, its shift then.
        self._last: tuple[float, tuple[int, ...], Forecast | None, float] | None = None

    def estimate(self, position: int) -> WaitEstimate | None:
        """How long a waiter at ``position`` is likely to wait, with a range; None: unknown.

        From this process's answers in flight (how long each has run), the whole
        queue's count of the others (another process's, when shared), the limit in
        force (``admission.max_active``, read each time: it may change at run time)
        and the recent processing times (``estimate.WaitEstimator``).
        """
        admission = self.admission
        now = time.monotonic()
        # What a pass leaves alone: the slots, who holds them, the line's length, the
        # admissions seen here, the samples learned.
        slots = (
            admission.max_active,
            admission.active_count,
            len(admission.active),
            self._admissions,
            self.estimator.version,
        )
        # The line's length matters only past the places the last forecast looked at.
        wanted = min(self.estimator.horizon, max(position, admission.queue_size, 1))
        last = self._last
        if (
            last is not None
            and now - last[0] <= PASS_SEC
            and last[1][:-1] == slots
            and wanted <= last[1][-1]
        ):
            looked, _, forecast, shift = last
            if forecast is None:
                return None
            forecast.shift = shift + now - looked
            return forecast.at(position)
        in_flight = [
            (now - t.record.started_mono, t.record.tier)
            for t in admission.active.values()
            if t.record.started_mono is not None
        ]
        forecast = self.estimator.forecast(
            in_flight,
            admission.max_active,
            unknown_in_flight=max(0, admission.active_count - len(in_flight)),
            tiers_ahead=self._tiers_ahead if self.estimator.tiered else None,
            timeout_sec=self.config.request_timeout_sec,
            horizon=max(position, admission.queue_size),
        )
        # Forecasts look at a power of two of places: a line that grows by one reuses it.
        looked_at = min(self.estimator.horizon, 1 << (wanted - 1).bit_length())
        self._last = (
            now,
            (*slots, looked_at),
            forecast,
            0.0 if forecast is None else forecast.shift,
        )
        return None if forecast is None else forecast.at(position)

    def _tiers_ahead(self) -> list[str | None]:
        """The tiers of the first waiters, by position (None: a place another process holds)."""
        tiers: list[str | None] = [None] * HORIZON
        for ticket in self.admission.waiting.values():
            position = ticket.place.position
            if 1 <= position <= HORIZON:
                tiers[position - 1] = ticket.record.tier
        return tiers

    def at_the_door(self, ticket: Ticket) -> WaitTooLong | None:
        """Note a waiting ticket's first estimate; the refusal when it exceeds its budget.

        The point estimate (the median) decides: refusing on the high end would turn
        away guests more likely than not to be served in time.
        """
        if ticket.place.admitted:
            return None
        record = ticket.record
        position = max(ticket.position, 1)
        estimate = self.estimate(position)
        if estimate is None:
            return None  # Nothing finished yet: nothing to refuse on.
        record.first_estimate_sec = estimate.seconds
        budget = record.max_wait_sec
        if not budget or estimate.seconds <= budget:
            return None
        return WaitTooLong(
            f"The wait is about {math.ceil(estimate.seconds)} s, longer than the "
            f"{budget:g} s this request accepts; please try again later.",
            self.retry_when_short(position, budget),
        )

    def retry_when_short(self, position: int, budget: float) -> int:
        """Seconds until a line of ``position`` drains to one waited out within ``budget``."""
        rate = self.drain_rate()
        if rate is None:
            timeout = self.config.request_timeout_sec
            return self.stats.retry_after(self.admission.max_active, timeout)
        return max(1, min(300, math.ceil(position / rate - budget)))

    def drain_rate(self) -> float | None:
        """Admissions per second lately, in the whole queue; None: too few seen to tell.

        A process sharing a queue sees only its own admissions: they are scaled by the
        share of the busy slots it holds.
        """
        rate = self.estimator.drain_rate()
        admission = self.admission
        local = len(admission.active)
        if rate is not None and local and admission.active_count > local:
            rate *= admission.active_count / local
        return rate

    def admitted(self, ticket: Ticket) -> None:
        """A ticket took a slot: the drain rate and the estimates' error learn of it (once:
        a request re-admitted after a busy upstream is neither a new admission nor a new
        estimate's outcome)."""
        self._admissions += 1  # Any admission changes the slots a forecast looked at.
        if ticket.drive.requeues:
            return
        self.estimator.note_admission()
        error = ticket.record.estimate_error_sec
        if error is not None:
            self.stats.estimate_errors.add(error)

    def ended(self, ticket: Ticket) -> None:
        """A request ended: an answer that held a slot is a sample of the processing time."""
        record = ticket.record
        processing = record.processing_ms
        if (
            ticket.place.admitted
            and processing is not None
            and not record.cached
            and not ticket.drive.requeues  # its time includes a wait for the Retry-After
        ):
            # Only answers that held a slot: followers and replays hold none.
            self.estimator.add_sample(processing / 1000, record.tier)
