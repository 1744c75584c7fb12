"""shopipe.backoff: delays double from the first up to the cap, jittered within their share."""

from __future__ import annotations

import pytest
from shopipe.backoff import Backoff, doubling

pytestmark = pytest.mark.unit


def test_doubling_starts_at_the_first_delay_and_stops_at_the_cap() -> None:
    assert [doubling(0.5, 3.0, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert doubling(0.5, 3.0, 10_000) == 3.0  # no overflow however many attempts


@pytest.mark.parametrize(("jitter", "low_share"), [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)])
def test_waits_are_drawn_within_their_share_of_each_delay(jitter: float, low_share: float) -> None:
    b = Backoff(0.1, 0.4, jitter=jitter)
    for step in (0.1, 0.2, 0.4, 0.4):
        w = b.wait()
        assert step * low_share <= w <= step


def test_reset_starts_the_doubling_over() -> None:
    b = Backoff(1.0, 8.0, jitter=0.0)
    assert [b.wait() for _ in range(3)] == [1.0, 2.0, 4.0]
    b.reset()
    assert b.wait() == 1.0


def test_a_jitter_outside_the_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 2.0, jitter=1.5)
