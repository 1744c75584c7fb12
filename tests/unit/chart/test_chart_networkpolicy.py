"""NetworkPolicies in both ways in: behind an ingress or Gateway (ClusterIP) the webhook port
admits only the ingress, behind a LoadBalancer anyone; the ops ports (/metrics, /status) admit
only Prometheus and the operator either way. Opt-in egress rules open only what each pod needs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.chart.conftest import parse_docs

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
INGRESS_NGINX = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
}


def operator_peer(release: str) -> Obj:
    labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/component": "operator"}
    return {"podSelector": {"matchLabels": labels}}


def rules_by_port(policy: Obj, direction: str = "ingress") -> dict[int, list[Obj]]:
    """port -> the rules that admit it."""
    out: dict[int, list[Obj]] = {}
    for rule in policy["spec"].get(direction) or []:
        for p in rule["ports"]:
            out.setdefault(p["port"], []).append(rule)
    return out


def policy(chart: Any, objs: list[Obj], component: str) -> Obj:
    found: Obj = chart.one(objs, "NetworkPolicy", f"-{component}")
    return found


def test_behind_an_ingress_the_webhook_port_admits_only_the_ingress(matrix, chart):
    objs = matrix["inchart-redis-values.yaml"]
    assert chart.one(objs, "Service", "-receiver")["spec"]["type"] == "ClusterIP"
    ports = rules_by_port(policy(chart, objs, "receiver"))
    assert set(ports) == {8080, 9090}
    ((webhook,), (ops,)) = ports[8080], ports[9090]
    assert webhook["from"] == [INGRESS_NGINX]
    assert ops["from"] == [MONITORING, operator_peer(chart.release)]
    assert [p["port"] for p in ops["ports"]] == [9090]  # the webhook rule never opens ops


def test_behind_a_loadbalancer_the_webhook_port_admits_anyone_and_ops_only_prometheus(
    matrix, chart
):
    objs = matrix["loadbalancer-values.yaml"]
    svc = chart.one(objs, "Service", "-receiver")
    assert svc["spec"]["type"] == "LoadBalancer"
    # The public Service carries the webhook port only; ops are on a ClusterIP Service.
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    ops_svc = chart.one(objs, "Service", "-receiver-metrics")
    assert ops_svc["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in ops_svc["spec"]["ports"]] == ["metrics"]
    ports = rules_by_port(policy(chart, objs, "receiver"))
    ((webhook,), (ops,)) = ports[8080], ports[9090]
    assert "from" not in webhook  # any source: the NodeBalancer's traffic comes from nodes
    prometheus = {
        **MONITORING,
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    assert ops["from"] == [prometheus, operator_peer(chart.release)]


def test_no_policy_opens_an_ops_port_to_anyone(matrix, chart):
    """In every ci/ rendering, a rule without `from` (any source) admits the webhook port only."""
    seen = 0
    for values, objs in matrix.items():
        for np in chart.find(objs, "NetworkPolicy"):
            seen += 1
            for rule in np["spec"]["ingress"]:
                if "from" not in rule:
                    assert np["metadata"]["name"].endswith("-receiver"), values
                    assert [p["port"] for p in rule["ports"]] == [8080], values
                else:
                    assert rule["from"], f"{values}: an empty from admits anyone"
    assert seen >= 8


def test_workers_admit_prometheus_and_the_operator_the_operator_only_prometheus(matrix, chart):
    objs = matrix["loadbalancer-values.yaml"]
    worker = rules_by_port(policy(chart, objs, "worker"))
    assert set(worker) == {9090}
    assert worker[9090][0]["from"][-1] == operator_peer(chart.release)
    operator = rules_by_port(policy(chart, objs, "operator"))
    assert set(operator) == {9091}
    assert operator_peer(chart.release) not in operator[9091][0]["from"]


def test_an_empty_metrics_from_admits_no_one_but_the_operator(chart):
    base = chart.chart_dir / "ci" / "inchart-redis-values.yaml"
    objs = chart.render("-f", base, "--set-json", "networkPolicy.metricsFrom=[]")
    assert policy(chart, objs, "operator")["spec"]["ingress"] == []
    assert rules_by_port(policy(chart, objs, "worker"))[9090][0]["from"] == [
        operator_peer(chart.release)
    ]
    receiver = rules_by_port(policy(chart, objs, "receiver"))
    assert receiver[9090][0]["from"] == [operator_peer(chart.release)]


def test_egress_stays_open_unless_asked(matrix, chart):
    for values in ("inchart-redis-values.yaml", "full-values.yaml"):
        for np in chart.find(matrix[values], "NetworkPolicy"):
            assert np["spec"]["policyTypes"] == ["Ingress"], values
            assert "egress" not in np["spec"]


def egress_to(policy: Obj) -> list[tuple[list[Obj], set[int]]]:
    out = []
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), "an egress rule without `to` opens every destination"
        out.append((rule["to"], {p["port"] for p in rule["ports"]}))
    return out


def cidrs(to: list[Obj]) -> list[str]:
    return [peer["ipBlock"]["cidr"] for peer in to if "ipBlock" in peer]


def test_opt_in_egress_opens_only_what_each_pod_needs(matrix, chart):
    objs = matrix["loadbalancer-values.yaml"]
    s3 = ["198.51.100.10/32", "198.51.100.11/32"]
    forwards = {"203.0.113.0/24": {443}, "10.2.0.0/16": {8443, 9443}}
    seen = {}
    for component in ("receiver", "worker", "operator", "redis"):
        np = policy(chart, objs, component)
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"], component
        rules = egress_to(np)
        dns, redis, *own = rules
        assert dns[1] == {53}
        assert dns[0][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
        assert redis[1] == {6379, 26379}
        exprs = {e["key"]: e["values"] for e in redis[0][0]["podSelector"]["matchExpressions"]}
        assert exprs["app.kubernetes.io/component"] == ["redis", "sentinel"]
        assert exprs["app.kubernetes.io/instance"] == [chart.release]
        seen[component] = {c: ports for to, ports in own for c in cidrs(to)}
        if component == "operator":
            (status,) = [to for to, ports in own if ports == {9090} and not cidrs(to)]
            labels = {e["key"]: e["values"] for e in status[0]["podSelector"]["matchExpressions"]}
            assert labels["app.kubernetes.io/component"] == ["receiver", "worker"]
    assert seen["receiver"] == {c: {443} for c in s3}
    assert seen["worker"] == {**{c: {443} for c in s3}, **forwards}
    # The operator lists incoming/ for its backlog: S3 too, or it never scales.
    assert seen["operator"] == {"192.0.2.1/32": {443}, **{c: {443} for c in s3}}
    assert seen["redis"] == {}


def test_external_redis_egress_goes_to_its_addresses(chart):
    values = chart.chart_dir / "ci" / "external-redis-values.yaml"
    objs = chart.render(
        "-f", values,
        "--set", "networkPolicy.egress.enabled=true",
        "--set", "networkPolicy.egress.s3.cidrs={198.51.100.10/32}",
        "--set", "networkPolicy.egress.redis.cidrs={10.0.0.0/24}",
    )  # fmt: skip
    assert not chart.find(objs, "NetworkPolicy", "-redis")
    _dns, redis, _s3 = egress_to(policy(chart, objs, "receiver"))
    assert (cidrs(redis[0]), redis[1]) == (["10.0.0.0/24"], {26379, 6379})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "networkPolicy.egress.s3.cidrs must list"),
        (("--set", "networkPolicy.egress.s3.cidrs={192.0.2.9/32}"), "egress.apiServer.cidrs"),
        (
            (
                "--set", "networkPolicy.egress.s3.cidrs={192.0.2.9/32}",
                "--set", "operator.enabled=false", "--set", "redis.enabled=false",
                "--set", "redis.external.sentinels={s:26379}",
            ),
            "networkPolicy.egress.redis.cidrs must list",
        ),
    ],
)  # fmt: skip
def test_egress_without_the_addresses_it_needs_is_refused(chart, args, message):
    base = chart.chart_dir / "ci" / "inchart-redis-values.yaml"
    proc = chart.template("-f", base, "--set", "networkPolicy.egress.enabled=true", *args)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_the_lke_overlay_policy_is_what_the_chart_renders_for_a_loadbalancer(chart):
    """k8s/overlays/lke patches the base (ClusterIP) to a NodeBalancer: its receiver policy must
    be the chart's own for that mode, so the kustomize way is as tight as the helm way."""
    proc = chart.run(
        [
            chart.helm, "template", "shopipe", chart.chart_dir,
            "-f", chart.root / "k8s/chart-values.yaml",
            "--set", "receiver.service.type=LoadBalancer",
        ]
    )  # fmt: skip
    want = chart.one(parse_docs(proc.stdout), "NetworkPolicy", "shopipe-receiver")["spec"]
    overlay = chart.run([chart.kubectl, "kustomize", chart.root / "k8s/overlays/lke"])
    got = chart.one(parse_docs(overlay.stdout), "NetworkPolicy", "shopipe-receiver")
    assert got["spec"] == want
