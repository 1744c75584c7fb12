"""The in-chart Redis: master and replicas with AOF on volumes, three Sentinels with quorum 2,
passwords from the Secret, anti-affinity, disruption budgets, min-replicas-to-write; or
external Sentinels."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.unit


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_redis_runs_the_official_pinned_image_with_aof_on_volumes(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    sts = chart.one(objs, "StatefulSet", "-redis")
    spec = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3
    for c in chart.containers(spec):
        assert re.fullmatch(r"redis:7\.4\.\d+", c["image"]), c["image"]
    redis = spec["containers"][0]
    assert redis["command"] == ["redis-server", "/etc/redis-run/redis.conf"]
    assert {m["name"]: m["mountPath"] for m in redis["volumeMounts"]}["data"] == "/data"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # AOF everysec comes from the shared policy (files/redis.conf); no override by default.
    assert "APPENDFSYNC" not in env_of(spec["initContainers"][0])
    data = chart.one(objs, "ConfigMap", "-redis-scripts")["data"]
    assert "appendonly yes" in data["redis.conf"].splitlines()
    assert "appendfsync everysec" in data["redis.conf"].splitlines()
    assert 'cat "$(dirname "$0")/redis.conf"' in data["redis-init.sh"]


def test_min_replicas_to_write_bounds_what_an_isolated_master_accepts(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    conf = chart.one(objs, "ConfigMap", "-redis-scripts")["data"]["redis.conf"].splitlines()
    assert "min-replicas-to-write 1" in conf
    assert "min-replicas-max-lag 10" in conf


def test_values_override_the_shared_policy_only_when_set(chart):
    def init_env(*args: str) -> dict[str, Any]:
        objs = chart.render("-f", chart.chart_dir / "ci" / "inchart-redis-values.yaml", *args)
        sts = chart.one(objs, "StatefulSet", "-redis")
        return env_of(sts["spec"]["template"]["spec"]["initContainers"][0])

    plain = init_env()
    for name in ("APPENDFSYNC", "MIN_REPLICAS_TO_WRITE", "MIN_REPLICAS_MAX_LAG", "MAXMEMORY"):
        assert name not in plain
    got = init_env(
        "--set", "redis.minReplicasToWrite=0", "--set", "redis.maxmemory=3gb",
        "--set", "redis.appendfsync=always",
    )  # fmt: skip
    assert got["MIN_REPLICAS_TO_WRITE"]["value"] == "0"  # 0 is an override, not "unset"
    assert got["MAXMEMORY"]["value"] == "3gb"
    assert got["APPENDFSYNC"]["value"] == "always"


def test_three_sentinels_with_quorum_two_follow_the_master_by_name(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    sts = chart.one(objs, "StatefulSet", "-sentinel")
    assert sts["spec"]["replicas"] == 3
    spec = sts["spec"]["template"]["spec"]
    init = env_of(spec["initContainers"][0])
    assert init["QUORUM"]["value"] == "2"
    assert spec["containers"][0]["command"] == ["redis-sentinel", "/etc/redis-run/sentinel.conf"]
    script = chart.one(objs, "ConfigMap", "-redis-scripts")["data"]["sentinel-init.sh"]
    assert "sentinel monitor ${MASTER_NAME} ${master} 6379 ${QUORUM}" in script
    assert "sentinel resolve-hostnames yes" in script
    # The shopipe processes are given every Sentinel, by stable name.
    shared = chart.one(objs, "ConfigMap", "-shopipe")["data"]
    sentinels = shared["SHOPIPE_SENTINELS"].split(",")
    headless = chart.one(objs, "Service", "-sentinel-headless")
    assert sentinels == [
        f"{sts['metadata']['name']}-{i}.{headless['metadata']['name']}:26379" for i in range(3)
    ]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert shared["SHOPIPE_SENTINEL_MASTER"] == "mymaster"


def test_passwords_come_from_the_secret_and_stay_in_memory(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    secret = chart.one(objs, "Secret")
    for suffix in ("-redis", "-sentinel"):
        spec = chart.one(objs, "StatefulSet", suffix)["spec"]["template"]["spec"]
        for c in chart.containers(spec):
            for e in c.get("env", []):
                if "PASSWORD" in e["name"]:
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == secret["metadata"]["name"]
                    # The extra passwords (rotation) are optional: usually not in the Secret.
                    assert ref["key"] in secret["stringData"] or ref.get("optional") is True
            # Probes read the password from the environment, never from argv literals.
            # (or run a script of the chart, which does the same: test_chart_redis_scripts.py).
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in c:
                    cmd = c[probe]["exec"]["command"]
                    assert cmd[1].startswith("/scripts/") or 'REDISCLI_AUTH="$' in cmd[2]
        sts = chart.one(objs, "StatefulSet", suffix)
        claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
        if suffix == "-sentinel":
            # Sentinel's state survives a full restart on a volume (redis.sentinel.persistence).
            assert "conf" in claims
            assert all(v["name"] != "conf" for v in spec["volumes"])
        else:
            conf = next(v for v in spec["volumes"] if v["name"] == "conf")
            assert conf["emptyDir"]["medium"] == "Memory"
    off = chart.render(
        "-f", chart.chart_dir / "ci" / "inchart-redis-values.yaml",
        "--set", "redis.sentinel.persistence.enabled=false",
    )  # fmt: skip
    sentinel = chart.one(off, "StatefulSet", "-sentinel")
    assert "volumeClaimTemplates" not in sentinel["spec"]
    conf = next(v for v in sentinel["spec"]["template"]["spec"]["volumes"] if v["name"] == "conf")
    assert conf["emptyDir"]["medium"] == "Memory"


def test_redis_and_sentinels_spread_over_nodes_with_disruption_budgets(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    for suffix in ("-redis", "-sentinel"):
        sts = chart.one(objs, "StatefulSet", suffix)
        anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
        pdb = chart.one(objs, "PodDisruptionBudget", suffix)
        assert pdb["spec"]["maxUnavailable"] == 1
    soft = chart.one(matrix["minimal-values.yaml"], "StatefulSet", "-redis")
    assert (
        "preferredDuringSchedulingIgnoredDuringExecution"
        in soft["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    )


def test_redis_is_reachable_only_from_this_release(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    np = chart.one(objs, "NetworkPolicy", "-redis")
    exprs = {e["key"]: e["values"] for e in np["spec"]["podSelector"]["matchExpressions"]}
    assert exprs["app.kubernetes.io/component"] == ["redis", "sentinel"]
    (rule,) = np["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": chart.release}}}
    ]
    assert sorted(p["port"] for p in rule["ports"]) == [6379, 26379]
    receiver = chart.one(objs, "NetworkPolicy", "-receiver")
    peers = receiver["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in peers


def test_external_sentinels_replace_the_in_chart_redis(matrix, chart):
    objs = matrix["external-redis-values.yaml"]
    assert not chart.find(objs, "StatefulSet")
    assert not chart.find(objs, "Secret")
    shared = chart.one(objs, "ConfigMap", "-shopipe")["data"]
    assert shared["SHOPIPE_SENTINELS"] == ",".join(
        f"sentinel-{i}.redis.example.internal:26379" for i in range(3)
    )
    assert shared["SHOPIPE_SENTINEL_MASTER"] == "webhooks"
    worker = chart.one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    ref = env_of(worker)["SHOPIPE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "shopipe-credentials", "key": "redis-password", "optional": True}


def test_redis_and_sentinels_get_guaranteed_qos_and_the_priority_class(matrix, chart):
    for values in ("inchart-redis-values.yaml", "full-values.yaml"):
        for suffix in ("-redis", "-sentinel"):
            spec = chart.one(matrix[values], "StatefulSet", suffix)["spec"]["template"]["spec"]
            main = spec["containers"][0]
            assert main["resources"]["requests"] == main["resources"]["limits"], (values, suffix)
            if values == "full-values.yaml":
                assert spec["priorityClassName"] == "shopipe-data"
            else:
                assert "priorityClassName" not in spec


def test_redis_requests_below_limits_are_refused(chart):
    proc = chart.template(
        "-f",
        chart.chart_dir / "ci" / "inchart-redis-values.yaml",
        "--set",
        "redis.resources.requests.cpu=100m",
    )
    assert proc.returncode != 0
    assert "requests must equal limits" in proc.stderr


def test_an_external_redis_over_tls_gets_the_setting_and_its_ca_in_every_app_pod(matrix, chart):
    objs = matrix["external-redis-values.yaml"]
    shared = chart.one(objs, "ConfigMap", "-shopipe")["data"]
    assert shared["SHOPIPE_REDIS_TLS"] == "true"
    path = shared["SHOPIPE_REDIS_TLS_CA_FILE"]
    deployments = chart.find(objs, "Deployment")
    assert len(deployments) == 2  # receiver and worker (no operator here)
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "redis-ca"]
        assert volume["configMap"] == {
            "name": "redis-ca",
            "items": [{"key": "ca.pem", "path": "ca.pem"}],
        }
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "redis-ca"]
        assert mount["readOnly"] is True
        assert path == f"{mount['mountPath']}/ca.pem"
    # Without TLS (the other renderings), neither the setting nor the volume.
    inchart = matrix["inchart-redis-values.yaml"]
    assert "SHOPIPE_REDIS_TLS" not in chart.one(inchart, "ConfigMap", "-shopipe")["data"]
    for d in chart.find(inchart, "Deployment"):
        assert all(v["name"] != "redis-ca" for v in d["spec"]["template"]["spec"]["volumes"])


def test_tls_for_the_in_chart_redis_is_refused(chart):
    proc = chart.template(
        "-f", chart.chart_dir / "ci" / "inchart-redis-values.yaml",
        "--set", "redis.external.tls.enabled=true",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "the in-chart Redis speaks plain TCP" in proc.stderr
