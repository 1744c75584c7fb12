"""The forward handler registers exactly the metrics docs/metrics.md lists for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import shopipe_worker.forward.metrics  # noqa: F401  (registers the forward metrics)
from shopipe.metrics import REGISTRY

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented() -> dict[str, str]:
    section = DOC.read_text().split("## Forward (worker)", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(shopipe_forward_[a-z_]+)` \| \w+ \| ([^|]*) \|", section, flags=re.M)
    return {name: labels.strip() for name, labels in rows}


def registered() -> dict[str, str]:
    out = {}
    for family in REGISTRY.collect():
        if family.name.startswith("shopipe_forward_"):
            # prometheus_client strips _total from counter family names.
            name = family.name + ("_total" if family.type == "counter" else "")
            metric = REGISTRY._names_to_collectors[name]
            out[name] = ", ".join(f"`{label}`" for label in metric._labelnames)  # type: ignore[attr-defined]
    return out


def test_forward_metrics_match_the_documented_table_with_route_first() -> None:
    assert documented()
    assert registered() == documented()
    assert all(labels.startswith("`route`") for labels in documented().values())
