"""The limit in use: how many answers may run at once, adapted to how fast the upstream answers.

``LimitController`` decides; the backends apply its decisions to
``Admission.max_active`` (a local queue at once, a shared one through Redis).

With a fixed limit (``GUEST_MAX_CONCURRENT_REQUESTS`` a number) the limit is that
number, except while the upstream says it is overloaded (``busy``): then it shrinks
for a while and comes back once answers succeed again.

With ``"auto"`` the controller also looks at time to first chunk, measured from
admission (the upstream's own latency: the wait in line is not in it). A model
server that batches answers just as fast up to a knee, then every answer slows;
the controller raises the limit while answers do not slow and lowers it when they
do. Time to first chunk rather than the chunk rate: every answer gives exactly one
sample, early, whatever its length (an answer's chunk rate depends on how long it
is and how the workflow splits it), and it is what the guest waits on.

How it keeps from oscillating:

- A decision is made at most once per ``interval_sec`` and only on at least
  ``min_samples`` answers admitted since the last change (each sample carries the
  limit's ``version`` at its admission): a change is judged by answers that ran
  under it, never by those started before it.
- It keeps, for each limit it has run at, the typical time to first chunk there
  (the median of its last interval there), and compares the current limit's
  with the median of those of the limits below it (not the fastest: the least
  of many noisy medians is biased low). Each limit is judged against its own
  measurements, never against a moving average that would drift up while the
  limit sits just past the knee. It acts only outside a tolerance band: slower
  than ``1 + tolerance`` times that two intervals in a row (one may be a stall
  or a burst of long prompts) lowers the limit, faster than
  ``1 + tolerance / 2`` may raise it.
- It raises only when the limit is in full use (``saturated``): no demand, no
  evidence that more would do.
- A limit found slow is remembered: the limit comes back to it only after a
  probe wait that doubles each time the probe is slow again (up to a minute).
- Before the first slowdown it grows by half each step (slow start), after it
  by one; a decrease divides the limit by the square root of the slowdown
  (at most by half, at least by one).

An upstream that slows for everyone (not for the load) looks like overload until
the lower limits are measured again: the limit steps down, finds them slow too,
and climbs back from there (a minute at most, the time it takes to walk down).

Deterministic: give it a clock and samples, and it decides the same every time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Samples kept between two decisions at most (the newest).
MAX_SAMPLES = 2000
#: The longest wait before probing a limit that was slow again.
MAX_PROBE_WAIT_SEC = 60.0
#: The limit shrinks to this fraction of itself when the upstream says it is overloaded.
BUSY_SHRINK = 0.5


@dataclass(frozen=True, slots=True)
class Change:
    """A change of the limit in use, and why (for the log)."""

    old: int
    new: int
    reason: str


class LimitController:
    """Decides the limit in use from answers' time to first chunk and the upstream's busy signals.

    ``auto`` False: the limit is ``ceiling`` (the fixed number) but for busy spells.
    """

    def __init__(
        self,
        floor: int,
        ceiling: int,
        *,
        auto: bool = True,
        clock: Callable[[], float] = time.monotonic,
        initial: int | None = None,
        interval_sec: float = 1.0,
        min_samples: int = 5,
        tolerance: float = 0.25,
        probe_wait_sec: float = 10.0,
    ) -> None:
        self.floor = max(1, min(floor, ceiling))
        self.ceiling = ceiling
        self.auto = auto
        self.clock = clock
        start = initial if initial is not None else (self.floor if auto else ceiling)
        #: The limit in use.
        self.limit = max(1, min(start, ceiling))
        #: Bumped at each change: a sample counts only under the limit it was admitted under.
        self.version = 0
        self.interval_sec = interval_sec
        self.min_samples = min_samples
        self.tolerance = tolerance
        self._samples: list[float] = []
        #: Typical time to first chunk at each limit run at (the last interval's median).
        self._speeds: dict[int, float] = {}
        self._changed_at = clock()
        #: Growing by half each step (at the start, and back after a busy spell) up to this.
        self._fast_to: int | None = ceiling if auto else None
        #: The lowest limit found slow (or busy), and when it may be tried again.
        self._bad: int | None = None
        self._probe_at = 0.0
        self._probe_base = probe_wait_sec
        self._probe_wait = probe_wait_sec
        self._busy_until = -math.inf
        self._busy_at = -math.inf
        #: The limit whose last interval was a little slow (0: none).
        self._strike = 0

    @property
    def mode(self) -> str:
        return "auto" if self.auto else "fixed"

    @property
    def settled(self) -> bool:
        """Whether the limit is where it stays without samples (fixed and not shrunk)."""
        return not self.auto and self.limit >= self.ceiling

    def observe(self, version: int, ttfc_sec: float) -> None:
        """One answer's time from admission to its first chunk, admitted under ``version``."""
        if version != self.version or self.settled or not math.isfinite(ttfc_sec):
            return
        samples = self._samples
        samples.append(max(0.0, ttfc_sec))
        if len(samples) > MAX_SAMPLES:
            del samples[: len(samples) - MAX_SAMPLES]

    def busy(self, retry_after_sec: float) -> Change | None:
        """The upstream is overloaded (it said so, asking for ``retry_after_sec``): shrink.

        A burst of such answers (all those in flight at once) shrinks the limit once per
        interval; each one pushes back the time it may grow again.
        """
        now = self.clock()
        retry = retry_after_sec if math.isfinite(retry_after_sec) else 0.0
        self._busy_until = max(self._busy_until, now + max(0.0, retry))
        if now - self._busy_at < self.interval_sec:
            return None
        self._busy_at = now
        old = self.limit
        self._mark_bad(old, now, wait_from=self._busy_until)
        self._fast_to = old if self.auto else self.ceiling
        new = max(1, math.floor(old * BUSY_SHRINK))
        return self._set(new, now, f"the upstream is overloaded (retry after {retry:g} s)")

    @property
    def due(self) -> bool:
        """Whether ``decide`` would look at the samples now (an interval, enough of them)."""
        return (
            self.clock() - self._changed_at >= self.interval_sec
            and len(self._samples) >= self.min_samples
        )

    def decide(self, saturated: bool) -> Change | None:
        """Decide on the samples so far; the change, if any. ``saturated``: every slot in
        use (or guests waiting) lately."""
        if not self.due:
            return None
        now = self.clock()
        short = statistics.median(self._samples)
        self._samples.clear()
        if now < self._busy_until:
            return None  # Answers succeed, but the upstream asked for time: no growth yet.
        if not self.auto:
            return self._recover(now)
        here = self._learn(self.limit, short)
        below = [t for limit, t in self._speeds.items() if limit < self.limit]
        # Their median, not the fastest: the least of many noisy medians is too low, and
        # the limits run at below the current one are mostly below the knee.
        baseline = statistics.median(below) if below else here
        ratio = here / baseline if baseline > 0 else 1.0
        if ratio > 1 + self.tolerance:
            # Only when the last interval here was slow too: one noisy second (a stall of
            # the event loop, a burst of long prompts) must not cost the limit.
            if self._strike == self.limit:
                return self._lower(now, ratio)
            self._strike = self.limit
            return None
        self._strike = 0
        bad = self._bad
        if (
            bad is not None
            and self._speeds.get(bad, math.inf) <= (1 + self.tolerance / 2) * baseline
        ):
            # Not slower than the limits below it any more: the upstream slowed for everyone.
            self._bad = None
        if self._bad is not None and self.limit >= self._bad:
            self._bad = None  # A probe above the old slow limit ran fine: it is slow no more.
            self._probe_wait = self._probe_base
        if ratio < 1 + self.tolerance / 2 and saturated:
            return self._raise(now, ratio)
        return None

    def recover(self) -> Change | None:
        """A fixed limit shrunk by a busy upstream: once the upstream's wait is over and an
        interval has passed with no new busy signal, a step back toward its number (by half
        each step). Adaptive limits grow back on their samples instead (``decide``)."""
        if self.auto or self.settled:
            return None
        now = self.clock()
        if now < self.recovery_at:
            return None
        # The upstream's own wait is the signal here, not a probe of a limit found slow.
        old = self.limit
        new = min(self.ceiling, old + max(1, old // 2))
        if new <= old:
            return None
        self._bad = None
        return self._set(new, now, "the upstream's wait is over and it was not busy again")

    @property
    def recovery_at(self) -> float:
        """When ``recover`` may next step a shrunk fixed limit back (on ``clock``)."""
        return max(self._busy_until, self._changed_at + self.interval_sec)

    def _learn(self, limit: int, median: float) -> float:
        """An interval's median is what is known of ``limit`` now (returned).

        Answers never get faster with more at once: what is known of other limits is
        corrected by it when beyond the tolerance (the upstream got faster, or slower,
        since)."""
        speeds = self._speeds
        speeds[limit] = here = median
        band = 1 + self.tolerance
        for other, t in speeds.items():
            # Beyond the tolerance only: noise must not spread to every other limit.
            if (other < limit and t > here * band) or (other > limit and t * band < here):
                speeds[other] = here
        return here

    def _recover(self, now: float) -> Change | None:
        """A fixed limit after a busy spell: back to the ceiling, by half again each step."""
        old = self.limit
        new = min(self.ceiling, old + max(1, old // 2))
        if self._bad is not None and new >= self._bad and now < self._probe_at:
            new = self._bad - 1
        if new <= old:
            return None
        return self._set(new, now, "answers succeed again after the upstream was overloaded")

    def _lower(self, now: float, ratio: float) -> Change | None:
        old = self.limit
        self._mark_bad(old, now, wait_from=now)
        self._fast_to = None
        cut = math.floor(old / math.sqrt(ratio))
        new = max(self.floor, min(old - 1, max(math.ceil(old / 2), cut)))
        if new >= old:
            return None
        reason = f"answers slowed to {ratio:.2f}x their usual time to first chunk"
        return self._set(new, now, reason)

    def _raise(self, now: float, ratio: float) -> Change | None:
        old = self.limit
        if self._fast_to is not None and old < self._fast_to:
            new = min(self._fast_to, old + max(1, old // 2))
        else:
            self._fast_to = None
            new = old + 1
        if self._bad is not None and new >= self._bad and now < self._probe_at:
            new = self._bad - 1  # Not back to a limit found slow until its probe is due.
        new = min(new, self.ceiling)
        if new <= old:
            return None
        reason = f"answers keep their speed ({ratio:.2f}x) with every slot in use"
        return self._set(new, now, reason)

    def _mark_bad(self, limit: int, now: float, *, wait_from: float) -> None:
        """``limit`` proved too many: wait before trying it again, longer if it was a probe."""
        if self._bad is not None and limit >= self._bad:
            self._probe_wait = min(self._probe_wait * 2, MAX_PROBE_WAIT_SEC)
        else:
            self._probe_wait = self._probe_base
        self._bad = limit
        self._probe_at = wait_from + self._probe_wait

    def _set(self, new: int, now: float, reason: str) -> Change:
        old = self.limit
        self.limit = new
        self.version += 1
        self._changed_at = now
        self._samples.clear()
        self._strike = 0
        return Change(old, new, reason)
