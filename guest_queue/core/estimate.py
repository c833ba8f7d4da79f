"""How long a waiter will wait: a point estimate and a range, from what the queue knows.

The line moves when a slot frees up: a waiter at position ``p`` is admitted at the
``p``-th admission from now. When that happens depends on

- the answers in flight: each one's remaining time, given how long it has run
  already (an answer at 4 s of a distribution whose median is 1.5 s is a long one,
  still running; one that has just started has most of its time ahead of it);
- the answers the waiters ahead will take, drawn from the recent processing times
  (their distribution, not just their mean; per tier when a tier has enough
  samples of its own);
- the slots (the current limit, read at each pass: it may change at run time).

``WaitEstimator.forecast`` simulates that a few hundred times (a small Monte Carlo,
seeded: the same state gives the same figures) up to a horizon of positions, and
extends the figures beyond it with the renewal-theory approximation (each further
admission adds ``mean / slots`` on average and ``var / slots**2`` to the variance).
A forecast is one table for every position, so the thousands of waiters a pass
moves cost one simulation, not one each.

The point estimate is the median (it minimises the expected absolute error); the
range is the 7.5th to the 92.5th percentile, rounded outwards to a tenth of a second.
Nominally that holds the actual wait 85 times in 100; quantiles estimated from 200
answers and 100 simulated futures are noisy, which narrows such a range in effect:
measured (bench/eta.py), 83-86 % of waits fall inside, where 10-90 % gave 77-81 %.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: How many recent processing times (per tier, and overall) the estimates look at.
WINDOW = 200
#: A tier with fewer samples than this uses the overall distribution.
MIN_TIER_SAMPLES = 20
#: Simulated futures per forecast (a forecast costs about 2 ms: RUNS x HORIZON steps);
#: fewer with many answers in flight, so that a run costs at most ``STEPS`` draws.
RUNS = 100
MIN_RUNS, STEPS = 30, 3000
#: Positions simulated one by one; beyond, the renewal-theory extension.
HORIZON = 24
#: The quantiles behind the point estimate and the range.
LOW_Q, MID_Q, HIGH_Q = 0.075, 0.5, 0.925
#: z-score of ``HIGH_Q`` for the normal extension beyond the horizon.
Z_HIGH = 1.4395
#: A forecast is reused while the slots hold the same answers, for at most this long;
#: its times count down meanwhile (the answers in flight age).
MAX_AGE_SEC = 0.5
#: Under churn (the answers in the slots change every few milliseconds, a sample comes
#: with each), a forecast is also reused, counting down, until this many times the
#: last simulation's cost has passed: simulating takes at most 1 % of the loop's time.
THROTTLE = 100
#: ... and for at most this long.
MAX_THROTTLE_SEC = 0.25
#: How far back admissions count towards the drain rate.
DRAIN_WINDOW_SEC = 60.0
#: An answer that has run longer than any sample is expected to end within this share
#: of the median (it is an outlier: nothing known says how long it goes on).
OUTLIER_REST = 0.25


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """Seconds until admission: the point estimate and the range around it."""

    seconds: float
    low: float
    high: float

    @property
    def range(self) -> list[float]:
        """``[low, high]`` as it goes on the wire."""
        return [self.low, self.high]


#: An answer in flight: (seconds it has run, its tier).
InFlight = tuple[float, str]


class _Samples:
    """Recent processing times, kept sorted on demand."""

    __slots__ = ("_recent", "_sorted")

    def __init__(self, size: int) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] | None = None

    def add(self, value: float) -> None:
        self._recent.append(value)
        self._sorted = None

    def __len__(self) -> int:
        return len(self._recent)

    @property
    def values(self) -> deque[float]:
        return self._recent

    @property
    def sorted(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self._recent)
        return self._sorted


class Forecast:
    """Admission times for every position, from one simulation of the slots."""

    __slots__ = ("_mean", "_quantiles", "_sd", "_tail_step", "_tail_var", "shift")

    def __init__(self, runs: list[list[float]], mean: float, variance: float, slots: int) -> None:
        horizon = len(runs[0]) if runs else 0
        self._quantiles: list[WaitEstimate] = []
        self._mean = 0.0
        self._sd = 0.0
        for p in range(horizon):
            times = sorted(run[p] for run in runs)
            self._quantiles.append(
                WaitEstimate(_q(times, MID_Q), _q(times, LOW_Q), _q(times, HIGH_Q))
            )
        if horizon:
            last = [run[-1] for run in runs]
            self._mean = statistics.fmean(last)
            self._sd = statistics.pstdev(last)
        self._tail_step = mean / slots
        self._tail_var = variance / slots**2
        #: Seconds since the simulation: every admission is that much nearer.
        self.shift = 0.0

    def at(self, position: int) -> WaitEstimate:
        """The estimate for a waiter at ``position`` (1: next in line)."""
        horizon = len(self._quantiles)
        if position <= horizon:
            est = self._quantiles[max(position, 1) - 1]
        else:
            beyond = position - horizon
            mid = self._mean + beyond * self._tail_step
            spread = Z_HIGH * math.sqrt(self._sd**2 + beyond * self._tail_var)
            est = WaitEstimate(mid, max(0.0, mid - spread), mid + spread)
        shift = self.shift
        # The range is rounded outwards: a wait announced as 1.2-1.9 s may take 1.94 s.
        return WaitEstimate(
            _round(est.seconds - shift),
            max(0.0, math.floor((est.low - shift) * 10) / 10),
            max(0.0, math.ceil(round((est.high - shift) * 10, 6)) / 10),
        )


class WaitEstimator:
    """Recent processing times and admissions, and the forecasts drawn from them."""

    def __init__(
        self,
        *,
        window: int = WINDOW,
        runs: int = RUNS,
        horizon: int = HORIZON,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        throttle: float = THROTTLE,
    ) -> None:
        self.window = window
        self.runs = runs
        self.horizon = horizon
        self.seed = seed
        self.clock = clock
        self.throttle = throttle
        self._all = _Samples(window)
        self._tiers: dict[str, _Samples] = {}
        self._version = 0
        self._admissions: deque[float] = deque(maxlen=window)
        #: The last forecast: its state, when it was made, it, its slots and horizon.
        self._cached: tuple[tuple[object, ...], float, Forecast, int, int] | None = None
        #: How long after a simulation any new one waits (``THROTTLE``).
        self._throttle_sec = 0.0

    # -- what it learns -------------------------------------------------------------

    def add_sample(self, seconds: float, tier: str = "guest") -> None:
        """One answer's processing time (answers from the workflow only)."""
        self._all.add(seconds)
        tier_samples = self._tiers.get(tier)
        if tier_samples is None:
            tier_samples = self._tiers[tier] = _Samples(self.window)
        tier_samples.add(seconds)
        self._version += 1

    def note_admission(self) -> None:
        """One request took a slot (for the drain rate)."""
        self._admissions.append(self.clock())

    @property
    def version(self) -> int:
        """Changes with every sample learned."""
        return self._version

    @property
    def has_samples(self) -> bool:
        return len(self._all) > 0

    def recent(self) -> list[float]:
        """The recent processing times, oldest first."""
        return list(self._all.values)

    @property
    def tiered(self) -> bool:
        """Whether more than one tier has a distribution of its own (tiers ahead matter)."""
        return sum(len(s) >= MIN_TIER_SAMPLES for s in self._tiers.values()) > 1

    def drain_rate(self) -> float | None:
        """Admissions per second over the last ``DRAIN_WINDOW_SEC``; None: too few to tell."""
        now = self.clock()
        recent = [t for t in self._admissions if now - t <= DRAIN_WINDOW_SEC]
        if len(recent) < 2:
            return None
        span = now - recent[0]
        return len(recent) / span if span > 0 else None

    # -- what it tells ----------------------------------------------------------------

    def forecast(
        self,
        in_flight: Sequence[InFlight],
        slots: int,
        *,
        unknown_in_flight: int = 0,
        tiers_ahead: Callable[[], Sequence[str | None]] | None = None,
        timeout_sec: float | None = None,
        horizon: int | None = None,
    ) -> Forecast | None:
        """The admission times of the positions ahead; None before any answer has finished.

        ``in_flight``: this process's answers holding a slot; ``unknown_in_flight``: the
        others holding one (another process's, on a shared queue: how long they have run
        is not known here, so each is taken as seen at a random moment of its answer).
        ``tiers_ahead``: the tiers of the waiters in line order, when known (called only
        when a new forecast is simulated: a forecast is reused while the same answers
        hold the slots, for up to ``MAX_AGE_SEC``, even if the line's order changes; and
        under churn for a short while whatever changed, see ``THROTTLE``).
        """
        if not self.has_samples or slots < 1:
            return None
        wanted = self.horizon if horizon is None else max(1, horizon)
        # Rounded up to a power of two: a line that grows by one reuses the forecast.
        horizon = min(self.horizon, 1 << (wanted - 1).bit_length())
        now = self.clock()
        key = (
            self._version,
            slots,
            unknown_in_flight,
            horizon,
            timeout_sec,
            # When each answer started (constant while it runs) and its tier.
            tuple((round(now - elapsed, 2), tier) for elapsed, tier in in_flight),
        )
        cached = self._cached
        if cached is not None:
            old_key, made, forecast, old_slots, old_horizon = cached
            age = now - made
            same = old_key == key and age <= MAX_AGE_SEC
            churn = old_slots == slots and old_horizon >= horizon and age <= self._throttle_sec
            if same or churn:
                forecast.shift = age
                return forecast
        tiers = tiers_ahead()[:horizon] if tiers_ahead is not None else ()
        started = time.perf_counter()
        forecast = self._simulate(in_flight, slots, unknown_in_flight, tiers, timeout_sec, horizon)
        cost = time.perf_counter() - started
        self._throttle_sec = min(MAX_THROTTLE_SEC, cost * self.throttle)
        self._cached = (key, now, forecast, slots, horizon)
        return forecast

    def _pool(self, tier: str | None) -> list[float]:
        if tier is not None:
            own = self._tiers.get(tier)
            if own is not None and len(own) >= MIN_TIER_SAMPLES:
                return own.sorted
        return self._all.sorted

    def _simulate(
        self,
        in_flight: Sequence[InFlight],
        slots: int,
        unknown: int,
        tiers_ahead: Sequence[str | None],
        timeout_sec: float | None,
        horizon: int,
    ) -> Forecast:
        rng = random.Random(self.seed)
        overall = self._all.sorted
        pools = [self._pool(tier) for tier in tiers_ahead]
        pools += [overall] * (horizon - len(pools))
        cap = timeout_sec if timeout_sec else math.inf
        # Length-biased draw (an answer seen at a random moment is more likely a long one).
        weights = list(_accumulate(overall))
        median = overall[len(overall) // 2]
        # Where each in-flight answer's rest may be drawn from (past its elapsed time).
        rests = []
        for elapsed, tier in in_flight:
            pool = self._pool(tier)
            rests.append((elapsed, pool, bisect.bisect_right(pool, elapsed)))
        steps = [(pool, len(pool)) for pool in pools]
        runs: list[list[float]] = []
        rand, choices = rng.random, rng.choices
        heappop, heapreplace, heappush = heapq.heappop, heapq.heapreplace, heapq.heappush
        draws = len(rests) + unknown + len(steps)
        for _ in range(max(1, min(self.runs, max(MIN_RUNS, STEPS // draws)))):
            ends: list[float] = []
            for elapsed, pool, k in rests:
                if k < len(pool):
                    rest = pool[k + int(rand() * (len(pool) - k))] - elapsed
                else:
                    rest = OUTLIER_REST * median * rand()
                ends.append(max(0.0, min(rest, cap - elapsed)))
            for length in choices(overall, cum_weights=weights, k=unknown) if unknown else ():
                ends.append(length * rand())
            heapq.heapify(ends)
            now = 0.0
            # More answers in flight than slots (the limit went down): those over it end first.
            for _ in range(len(ends) - slots):
                now = max(now, heappop(ends))
            times: list[float] = []
            for pool, n in steps:
                service = min(pool[int(rand() * n)], cap)
                if len(ends) < slots:
                    heappush(ends, now + service)  # a free slot: admitted now
                else:
                    now = max(now, ends[0])  # the next slot to free up
                    heapreplace(ends, now + service)
                times.append(now)
            runs.append(times)
        mean = statistics.fmean(overall)
        variance = statistics.pvariance(overall) if len(overall) > 1 else 0.0
        return Forecast(runs, mean, variance, slots)


def _accumulate(values: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += max(v, 1e-6)
        out.append(total)
    return out


def _q(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank, interpolated)."""
    if not ordered:
        return 0.0
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _round(seconds: float) -> float:
    return round(max(0.0, seconds), 1)


class ErrorWindow:
    """The recent estimate errors (actual minus first predicted wait), for ``queue/status``."""

    def __init__(self, size: int = 100) -> None:
        self._errors: deque[float] = deque(maxlen=size)

    def add(self, error_sec: float) -> None:
        self._errors.append(error_sec)

    def median_abs(self) -> float | None:
        """The median absolute error, seconds (two decimals); None before any."""
        if not self._errors:
            return None
        return round(statistics.median(abs(e) for e in self._errors), 2)
