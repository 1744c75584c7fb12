"""The pure parts of the bench's overload phase: time to full speed, targets, report section."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import overload, report

pytestmark = pytest.mark.unit


def test_full_speed_is_the_first_second_from_which_all_later_ones_are_all_200() -> None:
    # [second of due time, answered 200, other]
    timeline = [[0, 0, 100], [1, 0, 100], [2, 60, 40], [3, 100, 0], [4, 90, 10], [5, 100, 0]]
    assert overload.full_speed_after(timeline, 1.5, 100) == pytest.approx(3.5)
    assert overload.full_speed_after([[0, 100, 0], [1, 100, 0]], 0.0, 100) == 0.0
    assert math.isnan(overload.full_speed_after([[0, 0, 100], [1, 50, 50]], 0.0, 100))


def results(p99s: list[float], rss: list[float]) -> dict[str, Any]:
    stages = [
        {
            "stage": f"s{i}",
            "goodput_rps": 50.0,
            "share_503": 0.5,
            "p99_all_ms": p,
            "max_all_ms": p,
            "p99_ok_ms": p,
            "rss_max_mb": r,
            "puts_in_flight_max": 8,
        }
        for i, (p, r) in enumerate(zip(p99s, rss, strict=True))
    ]
    stages[-1] |= {"recovered_at_s": 12.0, "full_speed_after_s": 0.4}
    return {
        "overload": {
            "rate": 100.0,
            "seconds": 6.0,
            "connections": 600,
            "deadline_ms": 4000.0,
            "goal_p99_ms": 4100.0,
            "stages": stages,
        }
    }


def test_targets_judge_every_stage_p99_against_the_deadline_and_rss_against_healthy() -> None:
    got = {t["name"]: t["ok"] for t in overload.targets(results([50, 4090, 4200], [80, 90, 120]))}
    assert got == {
        "overload answer p99, all requests: s0": True,
        "overload answer p99, all requests: s1": True,
        "overload answer p99, all requests: s2": False,
        "overload receiver RSS over the healthy stage": False,  # +50 %
    }


def test_report_has_the_overload_section_and_its_targets() -> None:
    md = report.markdown(results([50, 4000], [80, 85]))
    assert "## Overload: a slow or stalled store" in md
    assert "| s1 | 50.0 | 50 % | 4000 |" in md
    assert "12.0 → 0.4" in md
    assert "overload receiver RSS over the healthy stage" in md
