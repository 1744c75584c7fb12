"""The optional Gateway API HTTPRoute: only the webhook path, a request deadline under Shopify's
5 s, attached to the Gateway named in the values, and valid against the Gateway API CRD schemas
(@kubernetes-models/gateway-api, run with node by validate_gateway.mjs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

Obj = dict[str, Any]

HERE = Path(__file__).resolve().parent
MODULES = HERE.parents[2] / ".tools" / "node" / "node_modules"


def validate(objs: list[Obj]) -> list[Obj]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required by the chart tests (Gateway API schemas)")
    if not (MODULES / "@kubernetes-models" / "gateway-api").is_dir():
        pytest.fail(f"{MODULES} lacks the Gateway API models: run `make tools`")
    proc = subprocess.run(
        [node, HERE / "validate_gateway.mjs", MODULES],
        input=json.dumps(objs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[Obj] = json.loads(proc.stdout)
    return result


def routes(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] == "HTTPRoute"]


def test_every_rendered_route_is_valid_against_the_gateway_api_schemas(matrix):
    found = [r for objs in matrix.values() for r in routes(objs)]
    assert found, "no ci values file renders the HTTPRoute"
    assert all(r["apiVersion"] == "gateway.networking.k8s.io/v1" for r in found)
    for res in validate(found):
        assert res["error"] is None, f"{res['name']}: {res['error']}"


def test_the_validator_refuses_what_the_schemas_refuse(matrix):
    """Guards the check above: a duration the CRD's pattern refuses, and a route without its
    parent, are reported."""
    route = routes(matrix["full-values.yaml"])[0]
    bad_timeout = json.loads(json.dumps(route))
    bad_timeout["spec"]["rules"][0]["timeouts"]["request"] = "4 seconds"
    bad_path = json.loads(json.dumps(route))
    bad_path["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Glob"
    errors = [r["error"] for r in validate([bad_timeout, bad_path])]
    assert all(errors), errors
    assert "timeouts/request" in errors[0]


def test_route_sends_only_webhook_posts_to_the_receiver_within_four_seconds(matrix, chart):
    objs = matrix["full-values.yaml"]
    route = routes(objs)[0]
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {"name": "shopipe", "namespace": "envoy-gateway-system", "sectionName": "https"}
    ]
    assert spec["hostnames"] == ["webhooks.shop.example"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [
        {"path": {"type": "Exact", "value": "/webhooks/shopify"}, "method": "POST"}
    ]
    assert rule["timeouts"] == {"request": "4s"}
    svc = chart.one(objs, "Service", "-receiver")
    assert rule["backendRefs"] == [
        {"name": svc["metadata"]["name"], "port": svc["spec"]["ports"][0]["port"]}
    ]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--set", "receiver.httpRoute.enabled=true"], "parentRefs must name the Gateway"),
        (
            [
                "--set",
                "receiver.httpRoute.enabled=true",
                "--set",
                "receiver.httpRoute.parentRefs[0].name=gw",
                "--set",
                "receiver.httpRoute.requestTimeout=5s",
            ],
            "requestTimeout",
        ),
        (
            [
                "--set",
                "receiver.httpRoute.enabled=true",
                "--set",
                "receiver.httpRoute.parentRefs[0].name=gw",
                "--set",
                "receiver.httpRoute.requestTimeout=5000ms",
            ],
            "requestTimeout",
        ),
    ],
)
def test_routes_without_a_gateway_or_with_a_deadline_past_shopifys_are_refused(chart, args, reason):
    base = chart.ci_values[0]
    proc = chart.template("-f", base, *args)
    assert proc.returncode != 0
    assert reason in proc.stderr, proc.stderr


def test_the_ingress_assumes_no_controller_and_no_issuer(chart):
    objs = chart.render(
        "-f",
        chart.chart_dir / "ci" / "minimal-values.yaml",
        "--set",
        "receiver.ingress.enabled=true",
    )
    ing = chart.one(objs, "Ingress")
    assert "ingressClassName" not in ing["spec"]
    assert "cert-manager.io/cluster-issuer" not in (ing["metadata"].get("annotations") or {})


def test_notes_give_the_routes_url(chart):
    proc = chart.run(
        [
            chart.helm,
            "install",
            "shop",
            chart.chart_dir,
            "--dry-run=client",
            "--namespace",
            "webhooks",
            "-f",
            chart.chart_dir / "ci" / "full-values.yaml",
        ]
    )
    assert "https://webhooks.shop.example/webhooks/shopify" in proc.stdout
    assert "get httproute shop-shopipe-receiver" in proc.stdout
