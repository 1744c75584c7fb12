"""values.yaml is documented line by line and values.schema.json (plus the chart's own checks)
rejects bad value sets: helm must refuse them instead of rendering something broken."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from shopipe.config import CommonSettings, OperatorSettings, ReceiverSettings, WorkerSettings
from shopipe.envparse import names

pytestmark = pytest.mark.unit

BASE = "ci/inchart-redis-values.yaml"

# Settings the chart sets itself (from values or per pod); users may not override them.
MANAGED_COMMON = {
    "SHOPIPE_POD_NAME",
    "SHOPIPE_REDIS_TLS",
    "SHOPIPE_REDIS_TLS_CA_FILE",
    "SHOPIPE_HTTP_PORT",
    "SHOPIPE_SENTINELS",
    "SHOPIPE_SENTINEL_MASTER",
    "SHOPIPE_S3_ENDPOINT",
    "SHOPIPE_S3_REGION",
    "SHOPIPE_S3_BUCKET",
    "SHOPIPE_REDIS_PASSWORD",
    "SHOPIPE_SENTINEL_PASSWORD",
    "SHOPIPE_S3_ACCESS_KEY",
    "SHOPIPE_S3_SECRET_KEY",
    "SHOPIPE_REDIS_URL",
}
MANAGED = {
    "receiver": {"SHOPIPE_SHOPIFY_SECRETS", "SHOPIPE_WEBHOOK_PATH", "SHOPIPE_OPS_PORT"},
    # The forward routes file and its secret come from the chart's Secret (worker.forward).
    "worker": {
        "SHOPIPE_DRAIN_SECONDS",
        "SHOPIPE_FORWARD_ROUTES_FILE",
        "SHOPIPE_FORWARD_SHOPIFY_SECRET",
    },
    "operator": {
        "SHOPIPE_BACKEND",
        "SHOPIPE_NAMESPACE",
        "SHOPIPE_WORKER_DEPLOYMENT",
        "SHOPIPE_POD_SELECTOR",
        "SHOPIPE_MIN_WORKERS",
        "SHOPIPE_MAX_WORKERS",
        "SHOPIPE_LEADER_ELECTION",
        "SHOPIPE_LEASE_NAME",
        "SHOPIPE_STATE_DIR",
    },
}
CLASSES = {"receiver": ReceiverSettings, "worker": WorkerSettings, "operator": OperatorSettings}


def schema() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[3] / "charts/shopipe/values.schema.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_schema_settings_follow_shopipe_config():
    """The settings users may set through values are exactly the services' settings minus those
    the chart manages. When config.py gains a setting, update values.schema.json."""
    s = schema()["properties"]
    common = names(CommonSettings) - MANAGED_COMMON
    assert set(s["settings"]["propertyNames"]["enum"]) == common
    for comp, cls in CLASSES.items():
        allowed = set(s[comp]["properties"]["settings"]["propertyNames"]["enum"])
        own = names(cls) - names(CommonSettings) - MANAGED_COMMON - MANAGED[comp]
        assert allowed == common | own, comp


def test_no_setting_users_may_set_is_one_the_chart_overrides(matrix):
    """A container's `env` wins over its `envFrom` ConfigMaps: a setting the chart puts in `env`
    must be refused in values, or the user's value would be silently ignored."""
    s = schema()["properties"]
    for values, objs in matrix.items():
        for o in objs:
            if o["kind"] != "Deployment":
                continue
            comp = o["metadata"]["labels"]["app.kubernetes.io/component"]
            allowed = set(s["settings"]["propertyNames"]["enum"])
            allowed |= set(s[comp]["properties"]["settings"]["propertyNames"]["enum"])
            for c in o["spec"]["template"]["spec"]["containers"]:
                env = {e["name"] for e in c.get("env", [])}
                assert not env & allowed, f"{values}: {comp} overrides {env & allowed}"


def test_schema_forbids_unknown_keys_everywhere():
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema(), "")


def test_every_value_is_documented_by_a_comment():
    """values.yaml is documented line by line: every leaf key has a comment right above it, or
    sits inside a documented key (e.g. the example entries of `settings` or `resources`)."""
    path = Path(__file__).resolve().parents[3] / "charts/shopipe/values.yaml"
    lines = path.read_text().splitlines()
    keys: list[tuple[int, int, bool]] = []  # (line number, indent, has a comment above)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        keys.append((i, indent, i > 0 and lines[i - 1].strip().startswith("#")))
    undocumented = []
    for n, (i, indent, commented) in enumerate(keys):
        nxt = keys[n + 1] if n + 1 < len(keys) else None
        is_group = nxt is not None and nxt[1] > indent and lines[i].rstrip().endswith(":")
        if commented or is_group:
            continue
        ancestors, level = [], indent
        for _j, ind, com in reversed(keys[:n]):
            if ind < level:
                ancestors.append(com)
                level = ind
        if not any(ancestors):
            undocumented.append(f"values.yaml:{i + 1}: {lines[i].strip()}")
    assert not undocumented, "\n".join(undocumented)


# name -> (helm arguments, a fragment of the error that names the reason)
REJECTED: dict[str, tuple[list[str], str]] = {
    "unknown top-level key": (["--set", "replicaCount=3"], "'replicaCount' not allowed"),
    "unknown nested key": (["--set", "receiver.replica=3"], "'replica' not allowed"),
    "unknown setting name": (["--set", "settings.SHOPIPE_LOG_LEVL=debug"], "must be one of"),
    "setting the chart manages": (
        ["--set", "worker.settings.SHOPIPE_DRAIN_SECONDS=5"],
        "must be one of",
    ),
    "secret as a plain setting": (["--set", "settings.SHOPIPE_S3_SECRET_KEY=x"], "must be one of"),
    "image tag latest": (["--set", "image.tag=latest"], "/image/tag"),
    "redis tag latest": (["--set", "redis.image.tag=latest"], "/redis/image/tag"),
    "one sentinel": (["--set", "redis.sentinel.replicas=1"], "/redis/sentinel/replicas"),
    "quorum below a majority": (["--set", "redis.sentinel.quorum=1"], "/redis/sentinel/quorum"),
    "quorum above the sentinels": (["--set", "redis.sentinel.quorum=4"], "must be a majority"),
    "redis without replica": (["--set", "redis.replicas=1"], "/redis/replicas"),
    "min-replicas-to-write not below replicas": (
        ["--set", "redis.minReplicasToWrite=3"],
        "redis.minReplicasToWrite must be below",
    ),
    "external redis without sentinels": (["--set", "redis.enabled=false"], "minItems"),
    "bad sentinel address": (
        ["--set", "redis.enabled=false", "--set", "redis.external.sentinels={nohost}"],
        "does not match pattern",
    ),
    "existingSecret and inline secrets": (["--set", "existingSecret=mine"], "maxLength"),
    "short redis password": (["--set", "secrets.redisPassword=short"], "/secrets/redisPassword"),
    "bad bucket name": (["--set", "s3.bucket=Bad_Bucket"], "/s3/bucket"),
    "no bucket": (["--set", "s3.bucket="], "s3.bucket is required"),
    "setting value as an object": (["--set", "settings.SHOPIPE_LOG_LEVEL.x=1"], "got object"),
    "min workers above max": (["--set", "operator.minWorkers=11"], "operator.minWorkers"),
    "receiver PDB blocking every drain": (["--set", "receiver.replicas=1"], "pdb.minAvailable"),
    "ingress without hosts": (
        ["--set", "receiver.ingress.enabled=true", "--set", "receiver.ingress.hosts=null"],
        "receiver.ingress.hosts",
    ),
    "negative drain": (["--set", "worker.drainSeconds=-1"], "/worker/drainSeconds"),
    "bad service type": (["--set", "receiver.service.type=External"], "/receiver/service/type"),
    "no resources limits": (["--set", "worker.resources.limits=null"], "missing property 'limits'"),
    "the ops port the chart sets": (
        ["--set", "receiver.settings.SHOPIPE_OPS_PORT=8081"],
        "invalid propertyName 'SHOPIPE_OPS_PORT'",
    ),
    "egress address not a CIDR": (
        ["--set", "networkPolicy.egress.s3.cidrs={s3.example.com}"],
        "/networkPolicy/egress/s3/cidrs/0",
    ),
    "egress destination without ports": (
        ["--set-json", 'networkPolicy.egress.destinations=[{"cidrs":["10.0.0.0/8"]}]'],
        "missing property 'ports'",
    ),
    "short extra redis password": (
        ["--set", "secrets.redisExtraPassword=short"],
        "/secrets/redisExtraPassword",
    ),
}


@pytest.mark.parametrize(("args", "reason"), REJECTED.values(), ids=REJECTED.keys())
def test_bad_values_are_rejected(chart, args, reason):
    proc = chart.template("-f", chart.chart_dir / BASE, *args)
    assert proc.returncode != 0, f"helm accepted {args}"
    assert reason in proc.stderr


def test_the_base_of_the_rejections_renders(chart):
    assert chart.render("-f", chart.chart_dir / BASE)


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ({"s3": {"bucket": ""}}, "s3.bucket"),
        ({"secrets": {"shopifySecrets": []}}, "shopifySecrets"),
        ({"secrets": {"sentinelPassword": ""}}, "sentinelPassword"),
    ],
)
def test_required_values_are_named_in_the_error(chart, tmp_path, missing, message):
    values = yaml.safe_load((chart.chart_dir / BASE).read_text())
    for key, sub in missing.items():
        values[key].update(sub)
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    proc = chart.template("-f", f)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_notes_and_values_pin_no_shopify_api_version_nor_unused_values(chart):
    """NOTES name no dated Shopify API version (it would age into an unsupported one), and
    clusterDomain, which nothing used, is gone."""
    notes = (chart.chart_dir / "templates" / "NOTES.txt").read_text()
    assert not re.search(r"20\d\d-\d\d", notes)
    values = yaml.safe_load((chart.chart_dir / "values.yaml").read_text())
    assert "clusterDomain" not in values
    proc = chart.template("-f", chart.chart_dir / BASE, "--set", "clusterDomain=cluster.local")
    assert proc.returncode != 0
