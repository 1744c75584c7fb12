"""The receiver registers exactly the metrics docs/metrics.md lists for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import shopipe_receiver.metrics  # noqa: F401  (registers the receiver metrics)
from shopipe.metrics import REGISTRY

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented() -> set[str]:
    section = DOC.read_text().split("## Receiver", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(shopipe_receiver_[a-z_]+)`", section, flags=re.M))


def registered() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("shopipe_receiver_"):
            # prometheus_client strips _total from counter family names.
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_receiver_metrics_match_the_documented_table() -> None:
    assert documented()
    assert registered() == documented()
