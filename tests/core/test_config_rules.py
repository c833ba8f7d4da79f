"""The setting rules that the app's checks and the OpenAI workflow's checks share."""

from __future__ import annotations

from typing import Any

import pytest

from guest_queue.core.config import int_at_least, number


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), (7, True), (0, False), (-1, False), (True, False), (1.0, False), ("1", False)],
)
def test_int_at_least_takes_integers_from_the_bound_up(value: Any, ok: bool) -> None:
    assert int_at_least(1)(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (0.0, True),
        (1.5, True),
        (2, True),
        (2.0001, False),
        (-0.1, False),
        (False, False),
        (None, False),
        ("1", False),
    ],
)
def test_number_between_bounds_inclusive(value: Any, ok: bool) -> None:
    assert number(0, 2)(value) is ok


@pytest.mark.parametrize(("value", "ok"), [(0, False), (0.001, True), (10**6, True), (-1, False)])
def test_number_strictly_above_with_no_upper_bound(value: Any, ok: bool) -> None:
    assert number(0, strict=True)(value) is ok
