"""Summaries of measured samples: percentiles by the nearest-rank method, and RSS trends.

Nearest rank (not interpolation) so a p99 is always a latency that really happened.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

QUANTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) of ``samples``; nan for no samples."""
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summarise(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9, mean and max of latencies in seconds, reported in milliseconds."""
    if not samples:
        return {
            "n": 0,
            "p50_ms": math.nan,
            "p90_ms": math.nan,
            "p99_ms": math.nan,
            "p999_ms": math.nan,
            "mean_ms": math.nan,
            "max_ms": math.nan,
        }
    ordered = sorted(samples)
    out: dict[str, float] = {"n": float(len(ordered))}
    for q in QUANTILES:
        name = "p" + f"{q:g}".replace(".", "")
        out[f"{name}_ms"] = percentile(ordered, q) * 1000
    out["mean_ms"] = statistics.fmean(ordered) * 1000
    out["max_ms"] = ordered[-1] * 1000
    return out


def rss_growth(samples: Sequence[tuple[float, float]], warmup: float = 0.2) -> dict[str, Any]:
    """Compare RSS early in a soak (after ``warmup`` of it) with RSS at its end.

    ``samples`` are (seconds since start, RSS bytes). The early window is the fifth of the run
    after the warm-up, the late window the last fifth; medians resist single spikes (a GC, a
    burst of buffers). Also a least-squares slope in MB per minute over the post-warm-up run.
    """
    if len(samples) < 5:
        return {
            "early_mb": math.nan,
            "late_mb": math.nan,
            "growth_pct": math.nan,
            "slope_mb_per_min": math.nan,
        }
    end = samples[-1][0]
    start = samples[0][0] + warmup * (end - samples[0][0])
    steady = [s for s in samples if s[0] >= start]
    if len(steady) < 5:
        steady = list(samples[-5:])
    fifth = max(1, len(steady) // 5)
    early = statistics.median(r for _, r in steady[:fifth])
    late = statistics.median(r for _, r in steady[-fifth:])
    ts = [t for t, _ in steady]
    rs = [r for _, r in steady]
    slope = statistics.linear_regression(ts, rs).slope if len(set(ts)) > 1 else 0.0
    return {
        "early_mb": early / 2**20,
        "late_mb": late / 2**20,
        "growth_pct": (late - early) / early * 100 if early else math.nan,
        "slope_mb_per_min": slope * 60 / 2**20,
    }


def curve(samples: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """(percentile, value) pairs spread over 0-100, for a CDF plot without every sample."""
    if not samples:
        return []
    ordered = sorted(samples)
    out = []
    for i in range(1, points + 1):
        q = 100.0 * i / points
        out.append((q, percentile(ordered, q)))
    return out
