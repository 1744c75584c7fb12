"""The chart's alert rules under promtool: valid, and each alert fires on the series that should
make it fire and stays silent on those that should not (tests/promtool/*.test.yaml).

The rules are read from the chart (charts/shopipe/files/alerts.rules.yaml) by promtool itself;
the time-scaled derivative the e2e drills load is checked to stay a valid rule file with the
same alerts and expressions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from shopipe_devstack.prometheus import chart_rules, duration_ms, scale_rules

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/shopipe/files/alerts.rules.yaml"
TESTS = sorted((ROOT / "tests/promtool").glob("*.test.yaml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool (.ci/run installs it)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def alerts(text: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(text)
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_the_devstack_loads_the_chart_rules_file():
    assert chart_rules() == RULES


@needs_promtool
def test_promtool_check_rules_accepts_the_chart_rules():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts(RULES.read_text()))} rules found" in out.stdout


@needs_promtool
def test_promtool_unit_tests_of_every_alert_pass():
    assert TESTS
    out = promtool("test", "rules", *map(str, TESTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_must_not():
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TESTS:
        doc = yaml.safe_load(path.read_text())
        # The tests load the chart's file, never a copy.
        assert [(path.parent / f).resolve() for f in doc["rule_files"]] == [RULES]
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alerts(RULES.read_text()))
    assert names - fires == set(), "alerts without a firing case"
    assert names - silent == set(), "alerts without a must-not-fire case"


def test_scaled_rules_divide_every_duration_and_change_nothing_else():
    text = RULES.read_text()
    scaled = scale_rules(text, 60)
    before, after = alerts(text), alerts(scaled)
    assert before.keys() == after.keys()
    durations = re.compile(r"\d+(?:ms|s|m|h|d|w)")
    for name, rule in before.items():
        new = after[name]
        if "for" in rule:
            assert duration_ms(new["for"]) * 60 == duration_ms(rule["for"]), name
        old_d = [duration_ms(d) for d in durations.findall(rule["expr"])]
        new_d = [duration_ms(d) for d in durations.findall(new["expr"])]
        assert [d // 60 for d in old_d] == new_d, name
        assert durations.sub("D", rule["expr"]) == durations.sub("D", new["expr"]), name
        assert rule["labels"] == new["labels"], name
        assert rule["annotations"] == new["annotations"], name


@needs_promtool
def test_promtool_accepts_the_scaled_rules(tmp_path: Path):
    path = tmp_path / "scaled.rules.yaml"
    path.write_text(scale_rules(RULES.read_text(), 60))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_service_monitor_honors_the_metrics_labels_like_the_local_prometheus():
    # The local Prometheus sets honor_labels; in Kubernetes the ServiceMonitor must too, or the
    # Prometheus Operator's `service` target label renames the metrics' own `service`.
    text = (ROOT / "charts/shopipe/templates/servicemonitor.yaml").read_text()
    assert text.count("- port:") == text.count("honorLabels: true") > 0
