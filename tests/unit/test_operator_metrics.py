"""The operator registers exactly the metrics docs/metrics.md lists for it, with their labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import shopipe_operator.metrics as m
import shopipe_operator.redismem  # noqa: F401  (registers the Redis memory gauges)
from shopipe.metrics import REGISTRY

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
# The operator's own, and the Redis memory it reads from the master (shopipe_operator.redismem).
OURS = (
    "shopipe_operator_",
    "shopipe_redis_used_",
    "shopipe_redis_maxmemory_",
    "shopipe_redis_memory_",
)


def documented() -> dict[str, set[str]]:
    section = DOC.read_text().split("## Operator", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(shopipe_[a-z_]+)` \| \w+ \| ([^|]*)\|", section, flags=re.M)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def registered() -> dict[str, set[str]]:
    """Operator metric names with their label names (a counter also registers its name
    without ``_total`` and a ``_created`` series: those are not separate metrics)."""
    out: dict[str, set[str]] = {}
    for collector, names in REGISTRY._collector_to_names.items():
        for name in names:
            if name.startswith(OURS) and not name.endswith("_created"):
                out[name] = set(getattr(collector, "_labelnames", ()))
    return {k: v for k, v in out.items() if k + "_total" not in out}


def test_operator_metrics_match_the_documented_table() -> None:
    doc = documented()
    assert len(doc) == 12
    assert registered() == doc


def test_master_info_keeps_one_series_and_majority_follows() -> None:
    m.set_master("10.0.0.1:6379")
    m.set_master("10.0.0.2:6379")
    text = "\n".join(
        f"{s.labels}={s.value}"
        for fam in REGISTRY.collect()
        if fam.name == "shopipe_operator_master_info"
        for s in fam.samples
    )
    assert "10.0.0.1" not in text
    assert "10.0.0.2" in text
    assert m.MAJORITY._value.get() == 1
    m.set_master(None)
    assert m.MAJORITY._value.get() == 0
    assert not [s for f in REGISTRY.collect() if f.name == "shopipe_operator_master_info"
                for s in f.samples]  # fmt: skip
