"""The chart lints, renders over the ci/ matrix, and every object is valid Kubernetes."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.unit.chart.conftest import parse_docs

pytestmark = pytest.mark.unit

CI_NAMES = sorted(
    p.name
    for p in (Path(__file__).resolve().parents[3] / "charts/shopipe/ci").glob("*-values.yaml")
)

# Kinds of CRDs kubernetes-validate has no schema for; checked structurally below instead
# (HTTPRoute against the Gateway API schemas in test_chart_gateway.py).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
GATEWAY_KINDS = {"HTTPRoute"}


@pytest.mark.parametrize("values", CI_NAMES)
def test_helm_lint_strict_passes(chart, values):
    proc = chart.run(
        [chart.helm, "lint", "--strict", chart.chart_dir, "-f", chart.chart_dir / "ci" / values],
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_matrix_covers_every_toggle(matrix):
    """The ci/ values sets render Redis in-chart and external, ingress, monitoring and operator
    both on and off, so each template branch is validated."""
    seen: dict[str, set[bool]] = {
        "redis": set(),
        "ingress": set(),
        "monitoring": set(),
        "operator": set(),
    }
    for objs in matrix.values():
        kinds = {o["kind"] for o in objs}
        names = {o["metadata"]["name"] for o in objs}
        seen["redis"].add("StatefulSet" in kinds)
        seen["ingress"].add("Ingress" in kinds)
        seen["monitoring"].add("PrometheusRule" in kinds and "ServiceMonitor" in kinds)
        seen["operator"].add(any(n.endswith("-operator") for n in names))
    assert all(v == {True, False} for v in seen.values()), seen


@pytest.mark.parametrize("values", CI_NAMES)
def test_every_object_is_valid_against_the_kubernetes_schemas(matrix, chart, values):
    objs = matrix[values]
    assert objs
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in GATEWAY_KINDS:
            continue
        if obj["kind"] in CRD_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", name
            assert isinstance(obj["spec"], dict), name
            assert obj["spec"], name
            continue
        try:
            kubernetes_validate.validate(obj, chart.k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{values}: {name} is invalid: {e.message} at {list(e.path)}")
        # Objects carry no namespace: helm and kustomize set it.
        assert "namespace" not in obj["metadata"], name


def test_service_monitor_scrapes_every_metrics_port(matrix):
    objs = matrix["full-values.yaml"]
    sm = next(o for o in objs if o["kind"] == "ServiceMonitor")
    ports = {e["port"] for e in sm["spec"]["endpoints"]}
    assert all(e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    comps = next(
        x
        for x in sm["spec"]["selector"]["matchExpressions"]
        if x["key"] == "app.kubernetes.io/component"
    )
    assert ports == {"metrics"}
    scraped = set()
    for svc in (o for o in objs if o["kind"] == "Service" and "clusterIP" not in o["spec"]):
        name, comp = (
            svc["metadata"]["name"],
            svc["metadata"]["labels"]["app.kubernetes.io/component"],
        )
        assert comp in comps["values"], name
        if {p["name"] for p in svc["spec"]["ports"]} & ports:
            scraped.add(comp)
        else:
            # The receiver's own Service (maybe public) has only the webhook port: no /metrics.
            assert name.endswith("-receiver"), name
            assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert scraped == {"receiver", "worker", "operator"}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_embeds_the_rules_file_unchanged(matrix, chart):
    rule = next(o for o in matrix["full-values.yaml"] if o["kind"] == "PrometheusRule")
    source = yaml.safe_load((chart.chart_dir / "files" / "alerts.rules.yaml").read_text())
    assert rule["spec"] == source
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]


def test_dashboard_configmap_ships_the_dashboard_for_the_grafana_sidecar(matrix, chart):
    cm = next(
        o
        for o in matrix["full-values.yaml"]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    )
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "shopipe"
    shipped = json.loads(cm["data"]["shopipe.json"])
    assert shipped == json.loads((chart.chart_dir / "files" / "dashboard.json").read_text())
    assert shipped["uid"] == "shopipe-overview"
    assert shipped["panels"]


def test_services_select_pods_and_name_real_ports(matrix):
    for values, objs in matrix.items():
        pods = [o["spec"]["template"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
        for svc in (o for o in objs if o["kind"] == "Service"):
            sel = svc["spec"]["selector"]
            targets = [p for p in pods if sel.items() <= p["metadata"]["labels"].items()]
            assert len(targets) == 1, (
                f"{values}: Service {svc['metadata']['name']} selects {len(targets)} workloads"
            )
            port_names = {
                p["name"] for c in targets[0]["spec"]["containers"] for p in c.get("ports", [])
            }
            for port in svc["spec"]["ports"]:
                assert port["targetPort"] in port_names, (
                    f"{values}: {svc['metadata']['name']} -> {port['targetPort']}"
                )


def test_every_workload_has_a_disruption_budget(matrix):
    for values, objs in matrix.items():
        pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
        for w in (o for o in objs if o["kind"] in ("Deployment", "StatefulSet")):
            labels = w["spec"]["template"]["metadata"]["labels"]
            covering = [
                p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
            ]
            assert len(covering) == 1, (
                f"{values}: {w['kind']}/{w['metadata']['name']} has {len(covering)} PDBs"
            )


def test_notes_tell_the_webhook_url_and_how_to_register_it(chart):
    notes = chart.notes("external-redis-values.yaml")
    assert "https://hooks.example.com/webhooks/shopify" in notes
    assert "webhookSubscriptionCreate" in notes
    assert "shopify app deploy" in notes


def test_monitoring_objects_need_the_prometheus_operator_and_carry_the_release_label(chart):
    """Without the Prometheus Operator's CRDs the ServiceMonitor and PrometheusRule are left out
    (they would abort the install: "no matches for kind") and the notes say why; with them,
    both carry the `release` label kube-prometheus-stack selects by, by default."""
    on = ["--set", "monitoring.serviceMonitor.enabled=true"]
    on += ["--set", "monitoring.prometheusRule.enabled=true"]
    values = ["-f", chart.chart_dir / "ci" / "minimal-values.yaml", *on]
    bare = chart.run(
        [chart.helm, "template", chart.release, chart.chart_dir, "--namespace", chart.namespace,
         "--set", "networkPolicy.enabled=false", *values],
    )  # fmt: skip
    kinds = {o["kind"] for o in parse_docs(bare.stdout)}
    assert not kinds & CRD_KINDS
    notes = chart.run(
        [chart.helm, "install", "--dry-run=client", chart.release, chart.chart_dir, *values],
    )  # fmt: skip
    for kind in CRD_KINDS:
        assert f"this cluster has no {kind} kind" in notes.stdout

    objs = chart.render(*values)
    for kind in CRD_KINDS:
        assert chart.one(objs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
