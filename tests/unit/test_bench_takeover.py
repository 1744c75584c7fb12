"""The pure parts of the bench's takeover phase and of merging runs into one report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench import report, sweep, takeover
from bench.stats import summarise

pytestmark = pytest.mark.unit


def test_handled_keeps_each_records_first_handling_since_the_start(tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    done.write_text(
        "100.0 100.5 w1 seg-a:0\n"
        "99.0 99.2 w0 seg-0:0\n"  # received before the run: not counted
        "100.0 106.0 w1 seg-a:0\n"  # handled again after a takeover: the first counts
        "101.0 101.1 w2"  # torn last line of a killed worker
    )
    assert takeover.handled(done, 100.0) == {"seg-a:0": (100.0, 100.5)}


def _takeover(held_s: list[float]) -> dict[str, Any]:
    return {
        "takeover": {
            "rate": 100.0,
            "seconds": 40.0,
            "killed_at_s": 10.2,
            "held_segments": 2,
            "held_webhooks": len(held_s),
            "held_not_handled": sum(1 for x in held_s if math.isinf(x)),
            "held_receipt_to_done": summarise(held_s),
            "kill_to_done_max_s": 5.5,
            "claimed_after_s": 5.1,
            "acknowledged": 4000,
            "handled": 4000,
            "all_receipt_to_done": summarise([0.05] * 100),
        }
    }


def test_takeover_target_is_the_held_webhooks_p99_within_ten_seconds() -> None:
    (ok,) = takeover.targets(_takeover([0.1, 5.5, 6.0]))
    assert ok["ok"]
    assert ok["measured"] == pytest.approx(6.0)
    (late,) = takeover.targets(_takeover([0.1, 5.5, math.inf]))  # one never handled
    assert not late["ok"]
    text = "\n".join(takeover.markdown(_takeover([0.1, 5.5, 6.0])))
    assert "| webhooks the killed worker held | 3 | 5.50 | 6.00 | 6.00 |" in text


def test_sweep_target_needs_low_rss_and_every_segment_processed() -> None:
    run = {"segments": 1000, "worker_peak_rss_mb": 90.0, "complete": True, "processed": 1000.0}
    assert sweep.targets({"sweep": run})[0]["ok"]
    assert not sweep.targets({"sweep": run | {"complete": False, "processed": 10.0}})[0]["ok"]
    assert not sweep.targets({"sweep": run | {"worker_peak_rss_mb": 151.0}})[0]["ok"]


def test_merged_runs_keep_each_phases_date_and_load() -> None:
    old = {
        "meta": {"date": "day 1", "machine": "box", "load_start": 0.5, "load_end": 0.7},
        "duration_s": 100.0,
        "sweep": {"segments": 1},
    }
    new = {
        "meta": {"date": "day 2", "machine": "box", "note": "Four other engineers' tests ran."},
        "duration_s": 50.0,
        "phase_runs": {
            "takeover": {
                "date": "day 2 08:00",
                "seconds": 40.0,
                "load_start": [4.0, 3.0, 2.0],
                "load_end": [5.0, 4.0, 3.0],
            }
        },
        **_takeover([1.0]),
    }
    merged = report.merge([old, new])
    assert set(merged["phase_runs"]) == {"sweep", "takeover"}
    assert merged["phase_runs"]["sweep"]["date"] == "day 1"  # an older run without records
    assert merged["duration_s"] == 150.0
    text = report.markdown(merged | {"sweep": None})  # the sweep's own table left out here
    assert "Merged from 2 runs" in text
    assert "Four other engineers' tests ran." in text
    assert "| takeover | day 2 08:00 | 40 | 4.00 / 3.00 / 2.00 | 5.00 / 4.00 / 3.00 |" in text
