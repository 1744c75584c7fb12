"""The alert rules and the Grafana dashboard name only metrics the code really exports, with the
labels (and label values) docs/metrics.md gives them; every alert links to its runbook entry."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
FILES = ROOT / "charts/shopipe/files"
SERVICE_METRICS = (
    "shopipe_receiver.metrics",
    "shopipe_worker.metrics",
    "shopipe_worker.forward.metrics",
    "shopipe_operator.metrics",
)
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "info": ("_info",),
}
METRIC = re.compile(r"\b(shopipe_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def documented() -> dict[str, dict[str, Any]]:
    """docs/metrics.md tables: metric -> {type, labels, values (backticked words of the row)}."""
    out = {}
    for line in (ROOT / "docs/metrics.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`shopipe_"):
            continue
        out[cells[0].strip("`")] = {
            "type": cells[1],
            "labels": set(re.findall(r"`([a-z_]+)`", cells[2])),
            "values": set(re.findall(r"`([a-z_]+)`", cells[3])),
        }
    return out


def series_names(families: dict[str, str]) -> set[str]:
    """Names of the series Prometheus scrapes for metric families {name: type}."""
    out = set()
    for name, kind in families.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        out |= {base + s for s in SUFFIXES[kind]}
    return out


def exported() -> tuple[set[str], list[str]]:
    """Series names the code registers: shopipe.metrics.REGISTRY after importing every
    service's metrics module. A module that does not exist yet falls back to docs/metrics.md
    for its prefix (and is reported), so the check never silently passes on nothing."""
    from shopipe.metrics import REGISTRY

    fallback = []
    for module in SERVICE_METRICS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            fallback.append(module)
    families = {f.name: f.type for f in REGISTRY.collect()}
    docs = documented()
    for module in fallback:
        prefix = "shopipe_" + module.split(".")[0].removeprefix("shopipe_") + "_"
        families.update({n: d["type"] for n, d in docs.items() if n.startswith(prefix)})
    return series_names(families), fallback


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((FILES / "alerts.rules.yaml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((FILES / "dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]


def all_exprs() -> list[tuple[str, str]]:
    out = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    return out + [(f"dashboard #{i}", e) for i, e in enumerate(dashboard_exprs())]


def base_name(series: str, docs: dict[str, dict[str, Any]]) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if series.endswith(suffix) and series.removesuffix(suffix) in docs:
            return series.removesuffix(suffix)
    return series if series in docs else series.removesuffix("_total") + "_total"


def test_registry_and_docs_agree():
    names, fallback = exported()
    assert not fallback, f"metrics modules missing, checked against docs instead: {fallback}"
    assert names == series_names({n: d["type"] for n, d in documented().items()})


def test_alerts_and_dashboard_use_only_exported_metrics():
    names, _ = exported()
    used = set()
    for where, expr in all_exprs():
        for series, _sel in METRIC.findall(expr):
            used.add(series)
            assert series in names, f"{where}: {series} is not exported by the code"
    # Each panel group of the issue is on the dashboard, each alert has data to work on.
    assert len(used) >= 25


# Labels Prometheus adds to every scraped series (Kubernetes service discovery), beside the ones
# the code exports: rules and panels may select and group by them.
TARGET_LABELS = {"namespace"}


def test_label_matchers_use_documented_labels_and_values():
    docs = documented()
    for where, expr in all_exprs():
        for series, selector in METRIC.findall(expr):
            meta = docs[base_name(series, docs)]
            for label, _op, value in MATCHER.findall(selector):
                if label in TARGET_LABELS:
                    continue
                assert label in meta["labels"], f"{where}: {series} has no label {label}"
                if label == "outcome":
                    # A regex matcher names alternatives: each must be a documented value.
                    values = value.split("|") if _op == "=~" else [value]
                    for v in values:
                        assert v in meta["values"], f"{where}: {series} outcome {v!r}"
        grouped = set()
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            grouped |= {x.strip() for x in clause.split(",") if x.strip()} - {"le"}
        labels = set().union(*(docs[base_name(s, docs)]["labels"] for s, _ in METRIC.findall(expr)))
        assert grouped <= labels | TARGET_LABELS, (
            f"{where}: groups by {grouped - labels}, which no metric has"
        )


def test_alerts_and_dashboard_are_per_namespace():
    """One Prometheus may watch several releases: every alert that aggregates keeps the
    namespace, and every panel query is restricted to the dashboard's namespace variable."""
    for rule in alert_rules():
        expr = rule["expr"]
        if rule["alert"] == "ShopipeOperatorAbsent":
            assert expr.strip() == "absent(shopipe_operator_leader)"
            continue
        for agg in re.findall(r"\b(?:sum|max|min|count|avg)\b\s*(by\s*\([^)]*\))?", expr):
            assert "namespace" in agg, f"{rule['alert']}: aggregates without namespace"
    dash = json.loads((FILES / "dashboard.json").read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "namespace")
    assert "label_values(shopipe_build_info, namespace)" in var["definition"]
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            for series, selector in METRIC.findall(target["expr"]):
                assert 'namespace="$namespace"' in selector, f"{panel['title']}: {series}"


def test_every_alert_named_in_the_issue_exists_and_links_its_runbook():
    rules = {r["alert"]: r for r in alert_rules()}
    assert {
        "ShopipeBacklogGrowing",
        "ShopipeOldestSegmentTooOld",
        "ShopipeDeadLetters",
        "ShopipeReceiverUnavailable",
        "ShopipeRedisFailover",
        "ShopipeNoSentinelMajority",
        "ShopipeOperatorNotLeading",
    } <= set(rules)
    ops = (ROOT / "docs/operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", ops, re.M)
    }
    for name, rule in rules.items():
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"/docs/operations.md#{name.lower()}"), name
        assert name.lower() in anchors, f"docs/operations.md has no section {name}"
        assert rule["annotations"]["summary"], name


def test_dashboard_covers_the_pipeline():
    dash = json.loads((FILES / "dashboard.json").read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "ack latency",
        "backlog",
        "oldest",
        "records by outcome",
        "end-to-end",
        "worker replicas",
        "redis master",
        "failovers",
        "forward deliveries",
        "forward breaker",
    ):
        assert topic in titles, topic
    ds = {
        t["datasource"]["uid"] for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
    }
    assert ds == {"${datasource}"}
