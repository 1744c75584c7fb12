"""worker.forward: the routes go to the chart's Secret, are mounted into the workers as the file
SHOPIPE_FORWARD_ROUTES_FILE names, pass the worker's own validation, and turn the handler on."""

from __future__ import annotations

import json

import pytest
from shopipe_worker.forward.routes import parse

pytestmark = pytest.mark.unit

BASE = "ci/inchart-redis-values.yaml"


def test_routes_are_a_secret_file_the_worker_accepts(chart, matrix):
    objs = matrix["full-values.yaml"]
    secret = chart.one(objs, "Secret")["stringData"]
    (route,) = parse(json.loads(secret["forward-routes.json"]))
    assert (route.name, route.max_in_flight, route.rate_per_second) == ("app", 4, 20.0)
    assert secret["forward-shopify-secret"] == "ci-shopify-secret-full"
    worker = chart.one(objs, "Deployment", "-worker")
    spec = worker["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    path = env["SHOPIPE_FORWARD_ROUTES_FILE"]["value"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "forward")
    volume = next(v for v in spec["volumes"] if v["name"] == "forward")
    assert path == mount["mountPath"] + "/" + volume["secret"]["items"][0]["path"]
    assert volume["secret"]["items"][0]["key"] == "forward-routes.json"
    ref = env["SHOPIPE_FORWARD_SHOPIFY_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "forward-shopify-secret"
    cm = chart.one(objs, "ConfigMap", "-worker")["data"]
    assert cm["SHOPIPE_BUILTIN_HANDLERS"] == "state,compliance,forward"


def test_without_routes_the_workers_have_no_forward(chart, matrix):
    objs = matrix["inchart-redis-values.yaml"]
    assert "forward-routes.json" not in chart.one(objs, "Secret").get("stringData", {})
    (c,) = chart.one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"]
    assert "SHOPIPE_FORWARD_ROUTES_FILE" not in {e["name"] for e in c["env"]}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--set", "worker.forward.routes.app.url=http://x"], "missing property 'topics'"),
        (
            [
                "--set",
                "worker.forward.routes.app.topics={orders/create}",
                "--set",
                "worker.forward.routes.app.url=http://x",
                "--set",
                "worker.forward.routes.app.colour=red",
            ],
            "additional properties 'colour'",
        ),
        (
            [
                "--set",
                "worker.forward.enabled=true",
                "--set",
                "worker.settings.SHOPIPE_BUILTIN_HANDLERS=state",
            ],
            "must include forward",
        ),
    ],
    ids=["no topics", "unknown key", "forward not among the built-ins"],
)
def test_bad_forward_values_are_rejected(chart, args, reason):
    proc = chart.template("-f", chart.chart_dir / BASE, *args)
    assert proc.returncode != 0, f"helm accepted {args}"
    assert reason in proc.stderr
