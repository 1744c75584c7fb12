"""The checker's figures mean what docs/reliability.md says they mean."""

from __future__ import annotations

import pytest

from tests.drills.checker import Attempt, longest_gap, recovery_after

pytestmark = pytest.mark.unit


def test_unavailable_is_the_longest_stretch_without_a_200_from_the_fault_to_the_end():
    assert longest_gap([11.0, 12.0, 17.0, 18.0], start=10.0, end=20.0) == 5.0
    assert longest_gap([], start=10.0, end=20.0) == 10.0  # never a 200: the whole window
    assert longest_gap([5.0, 25.0], start=10.0, end=20.0) == 10.0  # outside the window


def ok(side: str, t: float) -> Attempt:
    return Attempt("w", side, t - 0.01, t, 200)


def test_recovery_is_the_first_second_at_full_speed_with_both_sides_answering():
    # baseline 10/s; after the heal at t=100 only receiver-0 answers for 3 s, then both.
    early = [ok("receiver-0", 100 + i / 10) for i in range(30)]
    both = [ok(f"receiver-{i % 2}", 103 + i / 10) for i in range(30)]
    got = recovery_after(early + both, baseline=10.0, healed=100.0, end=106.0)
    assert got is not None
    assert 3.0 < got <= 4.25


def test_no_recovery_while_the_rate_stays_under_80_percent():
    slow = [ok(f"receiver-{i % 2}", 100 + i / 5) for i in range(30)]  # 5/s against 10/s
    assert recovery_after(slow, baseline=10.0, healed=100.0, end=106.0) is None
