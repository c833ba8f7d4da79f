"""The wait estimator: what it makes of the answers in flight, the distribution and the tiers."""

from __future__ import annotations

from guest_queue.core.estimate import (
    HORIZON,
    MIN_TIER_SAMPLES,
    ErrorWindow,
    WaitEstimate,
    WaitEstimator,
)


def estimator(samples: list[float], tier: str = "guest") -> WaitEstimator:
    """An estimator that simulates each new state at once (no throttle under churn)."""
    est = WaitEstimator(throttle=0)
    for s in samples:
        est.add_sample(s, tier)
    return est


def at(est: WaitEstimator, position: int, in_flight: list[tuple[float, str]], slots: int,
       **kwargs: object) -> WaitEstimate:  # fmt: skip
    forecast = est.forecast(in_flight, slots, **kwargs)  # type: ignore[arg-type]
    assert forecast is not None
    return forecast.at(position)


def test_no_estimate_before_any_answer_has_finished() -> None:
    assert WaitEstimator().forecast([(1.0, "guest")], 1) is None


def test_an_answer_that_has_run_past_the_short_ones_is_a_long_one() -> None:
    # A quarter of the answers take 1 s, three quarters 3 s; one slot, held by one answer.
    est = estimator([1.0] * 10 + [3.0] * 30)
    just_started = at(est, 1, [(0.1, "guest")], 1)
    # Most likely a 3 s answer: 2.9 s to go; perhaps a 1 s one: 0.9 s.
    assert just_started.seconds == 2.9
    assert just_started.low == 0.9 and just_started.high == 2.9
    # Past 1 s it can only be a 3 s answer: exactly 1.5 s to go, no spread.
    assert at(est, 1, [(1.5, "guest")], 1) == WaitEstimate(1.5, 1.5, 1.5)


def test_an_answer_longer_than_any_seen_is_expected_to_end_soon() -> None:
    est = estimator([2.0] * 20)
    overdue = at(est, 1, [(6.0, "guest")], 1)
    assert overdue.high <= 0.5  # at most a quarter of the median to go


def test_constant_answers_give_exact_admission_times() -> None:
    # Two slots, answers of exactly 2 s, in flight for 0.5 s and 1.0 s: they end at 1.0 s
    # and 1.5 s; the first two waiters take those slots and end at 3.0 s and 3.5 s.
    est = estimator([2.0] * 20)
    in_flight = [(0.5, "guest"), (1.0, "guest")]
    assert [at(est, p, in_flight, 2).seconds for p in (1, 2, 3, 4)] == [1.0, 1.5, 3.0, 3.5]
    # A free slot admits the first waiter at once.
    assert at(est, 1, [(1.0, "guest")], 2).seconds == 0.0


def test_the_range_holds_the_estimate_and_grows_with_the_position() -> None:
    est = estimator([0.5, 0.8, 1.0, 1.2, 1.5, 1.7, 2.0, 2.5, 3.5, 6.0] * 5)
    forecast = est.forecast([(0.2, "guest"), (1.1, "guest"), (2.4, "guest")], 3)
    assert forecast is not None
    previous = WaitEstimate(0.0, 0.0, 0.0)
    # Beyond the simulated horizon the figures are extended: no jump at its edge.
    for position in [*range(1, HORIZON + 5), 200, 1000]:
        est_p = forecast.at(position)
        assert est_p.low <= est_p.seconds <= est_p.high
        assert est_p.seconds >= previous.seconds and est_p.high >= previous.high
        previous = est_p
    # Far back, the line moves about mean / slots per place: 1000 * 2.07 / 3 s.
    assert 650 <= forecast.at(1000).seconds <= 730
    wide = forecast.at(1000)
    assert 0 < wide.high - wide.low < 0.1 * wide.seconds  # relatively narrow, far back


def members_and_guests() -> WaitEstimator:
    """Members' answers take 1 s, guests' 5 s, with enough samples of each."""
    est = estimator([1.0] * MIN_TIER_SAMPLES, "member")
    for _ in range(MIN_TIER_SAMPLES):
        est.add_sample(5.0, "guest")
    return est


def test_each_tier_uses_its_own_distribution_once_it_has_enough_samples() -> None:
    assert members_and_guests().tiered
    # One slot: a member's answer that has just started has about 1 s to go, a guest's 5 s.
    assert at(members_and_guests(), 1, [(0.0, "member")], 1).seconds == 1.0
    assert at(members_and_guests(), 1, [(0.0, "guest")], 1).seconds == 5.0
    # The waiter ahead of position 2 is a member (1 s) or a guest (5 s).
    member_ahead = at(members_and_guests(), 2, [(0.0, "member")], 1, tiers_ahead=lambda: ["member"])
    guest_ahead = at(members_and_guests(), 2, [(0.0, "member")], 1, tiers_ahead=lambda: ["guest"])
    assert (member_ahead.seconds, guest_ahead.seconds) == (2.0, 6.0)


def test_a_tier_with_few_samples_uses_the_overall_distribution() -> None:
    est = estimator([5.0] * 30)
    est.add_sample(1.0, "member")  # one member sample: not enough to go by
    assert not est.tiered
    assert at(est, 1, [(0.0, "member")], 1).seconds == 5.0


def test_answers_of_other_processes_count_with_a_random_elapsed_time() -> None:
    est = estimator([2.0] * 20)
    # One slot held by another process's answer: anywhere from 0 to 2 s to go.
    unknown = at(est, 1, [], 1, unknown_in_flight=1)
    assert 0.6 <= unknown.seconds <= 1.4 and unknown.low < unknown.seconds < unknown.high
    assert at(est, 1, [], 1).seconds == 0.0  # no slot taken: no wait


def test_a_forecast_serves_every_position_of_one_pass() -> None:
    now = [100.0]
    est = WaitEstimator(clock=lambda: now[0], throttle=0)
    for _ in range(20):
        est.add_sample(2.0)
    first = est.forecast([(0.5, "guest")], 1)
    assert first is not None and first.at(1).seconds == 1.5
    assert est.forecast([(0.5, "guest")], 1) is first  # the same state: not simulated again
    now[0] += 0.3
    aged = est.forecast([(0.8, "guest")], 1)
    assert aged is first and aged.at(1).seconds == 1.2  # reused, counting down
    est.add_sample(2.0)
    again = est.forecast([(0.8, "guest")], 1)
    assert again is not first  # a new sample: simulated again (0.3 s after the last one)
    now[0] += 1.0
    assert est.forecast([(1.8, "guest")], 1) is not again  # the answers have aged
    # Under churn, what changed within moments of a simulation waits for the next one.
    est.throttle = 1e6  # however cheap the last simulation was
    churned = est.forecast([(0.0, "guest")], 1)
    est.add_sample(2.0)
    assert est.forecast([(0.01, "guest")], 1) is churned
    now[0] += 0.3  # but never longer than MAX_THROTTLE_SEC
    assert est.forecast([(0.3, "guest")], 1) is not churned


def test_the_drain_rate_counts_recent_admissions() -> None:
    now = [0.0]
    est = WaitEstimator(clock=lambda: now[0])
    assert est.drain_rate() is None
    for t in (0.0, 5.0, 10.0):
        now[0] = t
        est.note_admission()
    assert est.drain_rate() == 0.3  # three admissions in the last 10 s
    now[0] = 200.0
    assert est.drain_rate() is None  # all too old


def test_the_error_window_reports_the_median_absolute_error() -> None:
    errors = ErrorWindow()
    assert errors.median_abs() is None
    for e in (-3.0, 0.5, 1.0, -0.25, 2.0):
        errors.add(e)
    assert errors.median_abs() == 1.0
