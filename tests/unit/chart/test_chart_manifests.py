"""k8s/: the kustomize base is exactly what the chart renders now, and base and LKE overlay build
with the real kubectl into valid objects."""

from __future__ import annotations

import difflib
from typing import Any

import kubernetes_validate
import pytest
import yaml
from shopipe.config import known_names

pytestmark = pytest.mark.unit


def kustomize(chart: Any, path: str) -> list[dict[str, Any]]:
    proc = chart.run([chart.kubectl, "kustomize", chart.root / path])
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_base_is_what_the_chart_renders_now(chart, tmp_path):
    """CI fails when k8s/base drifts from the chart: run `make manifests` and commit."""
    chart.run(["bash", chart.root / "scripts/manifests.sh", tmp_path])
    fresh = (tmp_path / "shopipe.yaml").read_text()
    committed = (chart.root / "k8s/base/shopipe.yaml").read_text()
    if fresh != committed:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(True), fresh.splitlines(True), "k8s/base", "chart"
                )
            )[:60]
        )
        pytest.fail(f"k8s/base/shopipe.yaml is stale; run `make manifests`:\n{diff}")


def test_base_builds_with_kustomize(chart):
    objs = kustomize(chart, "k8s/base")
    rendered = [
        d for d in yaml.safe_load_all((chart.root / "k8s/base/shopipe.yaml").read_text()) if d
    ]
    assert len(objs) == len(rendered) > 20
    assert not [o for o in objs if o["kind"] == "Secret"], "the base must carry no credentials"


def test_lke_overlay_builds_valid_objects_for_linode(chart):
    objs = kustomize(chart, "k8s/overlays/lke")
    for o in objs:
        kubernetes_validate.validate(o, chart.k8s_version, strict=True)
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "shopipe", o["metadata"]["name"]
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["namespace"] == "shopipe"
    svc = chart.one(objs, "Service", "shopipe-receiver")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in svc["spec"]["ports"]] == [443]
    ann = svc["metadata"]["annotations"]
    assert '"protocol": "https"' in ann["service.beta.kubernetes.io/linode-loadbalancer-port-443"]
    assert ann["service.beta.kubernetes.io/linode-loadbalancer-check-path"] == "/readyz"
    settings = chart.one(objs, "ConfigMap", "shopipe")["data"]
    assert settings["SHOPIPE_S3_ENDPOINT"].endswith(".linodeobjects.com")
    assert set(settings) <= known_names()
    redis = chart.one(objs, "StatefulSet", "shopipe-redis")
    assert (
        redis["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"]
        == "linode-block-storage-retain"
    )
    images = {
        c["image"]
        for o in objs
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert all(i.endswith(":0.1.0") for i in images), images
