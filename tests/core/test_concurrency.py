"""The limit controller, on a fake clock and scripted latencies: deterministic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guest_queue.core.concurrency import LimitController


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def controller(floor: int = 1, ceiling: int = 32, **kwargs: Any) -> tuple[LimitController, Clock]:
    clock = Clock()
    return LimitController(floor, ceiling, clock=clock, **kwargs), clock


def step(
    c: LimitController, clock: Clock, latency: float, *, saturated: bool = True, samples: int = 5
) -> None:
    """One second of answers under the current limit, all taking ``latency`` to first chunk."""
    clock.now += 1.0
    for _ in range(samples):
        c.observe(c.version, latency)
    c.decide(saturated)


def run(c: LimitController, clock: Clock, latency: Callable[[int], float], steps: int) -> list[int]:
    """The limit after each of ``steps`` seconds against an upstream whose latency
    depends on the limit."""
    limits = []
    for _ in range(steps):
        step(c, clock, latency(c.limit))
        limits.append(c.limit)
    return limits


def knee(n: int) -> Callable[[int], float]:
    """A model server: 0.2 s to first chunk up to ``n`` at once, slower past it (squared)."""
    return lambda limit: 0.2 * max(1.0, limit / n) ** 2


def test_the_limit_rises_while_answers_keep_their_speed() -> None:
    c, clock = controller(floor=2, ceiling=20)
    assert c.limit == 2
    limits = run(c, clock, lambda _: 0.5, 12)
    assert limits[0] > 2
    assert limits == sorted(limits)  # never down
    assert limits[-1] == 20  # up to the ceiling, not beyond


def test_the_limit_falls_when_answers_slow_and_not_below_the_floor() -> None:
    c, clock = controller(floor=3, ceiling=20, initial=3)
    for _ in range(6):
        step(c, clock, 0.5)  # fast at every limit: up to the ceiling
    assert c.limit == 20
    step(c, clock, 1.5)  # the upstream now slows with every answer added
    assert c.limit == 20  # one slow second could be noise
    step(c, clock, 1.5)
    assert 10 <= c.limit < 20  # two are not: down, at most halved at once
    limits = run(c, clock, lambda limit: 0.5 * 3 ** (limit / 3 - 1), 12)
    assert min(limits) == 3  # the floor: never below it
    assert limits.count(3) >= 6  # mostly there: 4 is already 44 % slower


def test_an_upstream_slow_for_everyone_is_not_overload() -> None:
    c, clock = controller(floor=1, ceiling=8)
    for _ in range(5):
        step(c, clock, 0.5)
    assert c.limit == 8
    limits = run(c, clock, lambda _: 2.0, 30)  # four times slower, whatever the limit
    assert limits[1] < 8  # it looks like overload at first
    assert limits[-1] == 8  # found slow at the lower limits too: climbs back


def test_the_limit_holds_within_the_tolerance_band() -> None:
    c, clock = controller(initial=8)
    c._fast_to = None  # past the start
    step(c, clock, 1.0)
    held = c.limit
    for _ in range(20):
        step(c, clock, 1.2)  # 20 % slower: inside the band (25 %)
    assert c.limit == held


def test_the_limit_does_not_rise_without_demand() -> None:
    c, clock = controller(initial=4)
    for _ in range(10):
        step(c, clock, 1.0, saturated=False)
    assert c.limit == 4


def test_no_decision_on_too_few_samples_or_too_soon() -> None:
    c, clock = controller(initial=4)
    step(c, clock, 1.0, samples=4)  # a second, but four answers only
    assert c.limit == 4
    c, clock = controller(initial=4)
    clock.now += 0.5
    for _ in range(10):
        c.observe(c.version, 1.0)
    assert c.decide(True) is None  # ten answers, but half a second only
    clock.now += 0.6
    assert c.decide(True) is not None
    assert c.limit == 6


def test_answers_admitted_under_an_older_limit_do_not_count() -> None:
    c, clock = controller(initial=4)
    step(c, clock, 1.0)
    assert c.limit > 4
    old = c.version - 1
    clock.now += 1.0
    for _ in range(50):
        c.observe(old, 100.0)  # slow, but admitted before the change: not this limit's doing
    assert c.decide(True) is None
    assert c.limit > 4


def test_it_finds_the_knee_and_stays_near_it() -> None:
    for n in (2, 6, 16):
        c, clock = controller(ceiling=24)
        limits = run(c, clock, knee(n), 300)
        reached = next(i for i, limit in enumerate(limits) if limit >= n)
        assert reached < 20, (n, limits[:30])
        late = limits[60:]
        # Throughput (answers at once over their time) and time to first chunk against
        # those at the knee, the best fixed limit: probes above it are rare and short.
        best = n / knee(n)(n)
        throughput = sum(limit / knee(n)(limit) for limit in late) / len(late)
        slower = sum(knee(n)(limit) for limit in late) / len(late) / knee(n)(n)
        assert throughput >= 0.9 * best, (n, late)
        assert slower <= 1.2, (n, late)
        assert min(late) >= max(1, n - 1) and max(late) <= n + 2, (n, late)


def test_it_follows_a_capacity_halving() -> None:
    c, clock = controller(ceiling=24)
    run(c, clock, knee(16), 60)
    assert c.limit >= 15
    after = run(c, clock, knee(8), 60)
    settled = next(i for i, limit in enumerate(after) if limit <= 9)
    assert settled < 10, after[:20]
    assert all(limit <= 10 for limit in after[settled:])


def test_a_busy_upstream_halves_the_limit_once_per_burst() -> None:
    c, clock = controller(initial=16)
    change = c.busy(5.0)
    assert change is not None and (change.old, change.new) == (16, 8)
    assert "overloaded" in change.reason
    for _ in range(7):
        assert c.busy(5.0) is None  # the rest of the burst: the same signal
    assert c.limit == 8
    clock.now += 1.5
    c.busy(5.0)
    assert c.limit == 4  # a new signal a while later halves again
    for _ in range(10):
        c.busy(1.0)
        clock.now += 1.5
    assert c.limit == 1  # never below one, whatever the floor


def test_after_a_busy_spell_the_limit_grows_back_only_once_answers_succeed() -> None:
    c, clock = controller(floor=4, ceiling=64, initial=16)
    for _ in range(3):
        step(c, clock, 1.0)
    high = c.limit
    c.busy(10.0)
    low = c.limit
    assert low == high // 2
    for _ in range(9):
        step(c, clock, 1.0)  # answers succeed, but the upstream asked for 10 s
    assert c.limit == low
    clock.now += 1.0
    assert c.decide(True) is None  # time is up, but no answer has succeeded since
    assert c.limit == low
    back = run(c, clock, lambda _: 1.0, 2)
    assert back == [low + low // 2, high - 1]  # by half again, short of the busy limit
    back = run(c, clock, lambda _: 1.0, 11)
    assert back[:7] == [high - 1] * 7  # until a probe is due (10 s after the busy spell)
    assert back[-1] > high  # the probe succeeded: it grows on


def test_a_fixed_limit_shrinks_while_busy_and_comes_back_to_its_number() -> None:
    c, clock = controller(floor=6, ceiling=6, auto=False)
    assert (c.limit, c.mode, c.settled) == (6, "fixed", True)
    for _ in range(5):
        step(c, clock, 0.2)
    assert c.limit == 6  # never above its number, latency or not
    c.busy(2.0)
    assert c.limit == 3 and not c.settled
    step(c, clock, 0.2)
    assert c.limit == 3  # within the 2 s
    clock.now += 2
    for _ in range(12):
        step(c, clock, 9.9)  # a fixed limit ignores how slow answers are
    assert c.limit == 6 and c.settled


def test_a_fixed_limit_comes_back_after_the_upstreams_wait_with_no_answers_to_judge() -> None:
    # A quiet site: no answer's speed to judge by. The upstream's own Retry-After is the
    # signal: once it has passed and a second has gone by with no new busy signal, a step.
    c, clock = controller(floor=8, ceiling=8, auto=False)
    c.busy(2.0)
    assert c.limit == 4
    assert c.recovery_at == 102.0
    clock.now = 101.9
    assert c.recover() is None and c.limit == 4
    clock.now = 102.0
    change = c.recover()
    assert change is not None and (change.old, change.new) == (4, 6)
    assert c.recover() is None  # a second between steps
    clock.now = 102.5
    c.busy(1.0)  # busy again: smaller still, and its wait starts over
    assert c.limit == 3 and c.recovery_at == 103.5
    clock.now = 103.5
    assert c.recover() is not None and c.limit == 4
    clock.now = 104.5
    assert c.recover() is not None and c.limit == 6
    clock.now = 105.5
    assert c.recover() is not None and c.limit == 8 and c.settled
    clock.now = 110.0
    assert c.recover() is None and c.limit == 8  # never above its number


def test_an_adaptive_limit_grows_back_on_answers_not_on_the_clock() -> None:
    c, clock = controller(floor=1, ceiling=16, initial=8)
    c.busy(1.0)
    assert c.limit == 4
    clock.now += 60
    assert c.recover() is None and c.limit == 4


def test_the_same_inputs_give_the_same_limits() -> None:
    first = run(*controller(ceiling=24), knee(6), 120)
    second = run(*controller(ceiling=24), knee(6), 120)
    assert first == second
