"""Policies over every rendered object of the ci/ matrix: security contexts, resources, probes,
pinned images, credentials only in Secrets, settings the services know, least-privilege RBAC."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from shopipe.config import known_names

pytestmark = pytest.mark.unit

SECRET_SETTINGS = {
    "SHOPIPE_SHOPIFY_SECRETS",
    "SHOPIPE_S3_ACCESS_KEY",
    "SHOPIPE_S3_SECRET_KEY",
    "SHOPIPE_REDIS_PASSWORD",
    "SHOPIPE_SENTINEL_PASSWORD",
    "SHOPIPE_FORWARD_SHOPIFY_SECRET",
}


def all_pods(matrix: Any, chart: Any) -> Iterator[tuple[str, Any]]:
    for values, objs in matrix.items():
        for name, spec in chart.pod_specs(objs):
            yield f"{values}: {name}", spec


def test_pods_run_as_non_root_with_the_runtime_default_seccomp_profile(matrix, chart):
    pods = list(all_pods(matrix, chart))
    assert len(pods) >= 10
    for where, spec in pods:
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        assert sc["runAsUser"] > 0, where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where


def test_every_container_is_locked_down(matrix, chart):
    for where, spec in all_pods(matrix, chart):
        for c in chart.containers(spec):
            sc = c["securityContext"]
            at = f"{where}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["runAsNonRoot"] is True, at
            assert sc["capabilities"]["drop"] == ["ALL"], at
            assert "add" not in sc["capabilities"], at
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", at
        assert not spec.get("hostNetwork"), where
        assert not spec.get("hostPID"), where


def test_every_container_has_requests_and_limits(matrix, chart):
    for where, spec in all_pods(matrix, chart):
        for c in chart.containers(spec):
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) >= {"cpu", "memory"}, f"{where}/{c['name']} {kind}"


def test_every_long_running_container_has_readiness_and_liveness_probes(matrix, chart):
    for where, spec in all_pods(matrix, chart):
        for c in spec["containers"]:
            assert "readinessProbe" in c, f"{where}/{c['name']}"
            assert "livenessProbe" in c, f"{where}/{c['name']}"


def test_images_are_pinned_and_never_latest(matrix, chart):
    for where, spec in all_pods(matrix, chart):
        for c in chart.containers(spec):
            image = c["image"]
            _name, sep, tag = image.rpartition(":")
            assert sep, f"{where}: {image} has no tag"
            assert "/" not in tag, f"{where}: {image} has no tag"
            assert tag != "latest", f"{where}: {image}"
            assert re.fullmatch(r"[0-9][A-Za-z0-9_.-]*", tag), f"{where}: {image} is not a version"


def test_shopipe_containers_run_their_service_on_its_port_with_the_right_probes(matrix):
    expected = {
        "receiver": ([8080, 9090], "/readyz", "/healthz"),
        "worker": ([9090], "/healthz", "/healthz"),
        "operator": ([9091], "/healthz", "/healthz"),
    }
    seen = set()
    for values, objs in matrix.items():
        for d in (o for o in objs if o["kind"] == "Deployment"):
            c = d["spec"]["template"]["spec"]["containers"][0]
            service = c["name"]
            port, ready, live = expected[service]
            seen.add(service)
            assert c["image"].split("/")[-1].startswith(f"shopipe-{service}:"), values
            assert c["args"] == [service], values
            assert [p["containerPort"] for p in c["ports"]] == port, values
            env = {e["name"]: e for e in c["env"]}
            assert env["SHOPIPE_HTTP_PORT"]["value"] == str(port[0]), values
            if service == "receiver":
                # /metrics and /status on their own port; the webhook port serves the probes.
                assert env["SHOPIPE_OPS_PORT"]["value"] == str(port[1]), values
                assert c["ports"][1]["name"] == "metrics"
                for probe in ("readinessProbe", "livenessProbe"):
                    assert c[probe]["httpGet"]["port"] == "http", values
                annotations = d["spec"]["template"]["metadata"]["annotations"]
                assert annotations["shopipe.io/status-port"] == str(port[1]), values
            assert env["SHOPIPE_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            assert c["readinessProbe"]["httpGet"]["path"] == ready, values
            assert c["livenessProbe"]["httpGet"]["path"] == live, values
    assert seen == set(expected)


def rendered_settings(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every SHOPIPE_* name a shopipe container gets: env entries and its ConfigMaps' keys."""
    cms = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    for d in (o for o in objs if o["kind"] == "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            names = {e["name"]: e for e in c.get("env", [])}
            for ref in c.get("envFrom", []):
                for key in cms[ref["configMapRef"]["name"]]:
                    names.setdefault(key, {"configMap": True})
            yield d["metadata"]["name"], names


def test_every_rendered_setting_is_one_the_services_know(matrix):
    """Services reject unknown SHOPIPE_* names at start: the chart must render none."""
    known = known_names()
    for values, objs in matrix.items():
        for name, env in rendered_settings(objs):
            shopipe = {k for k in env if k.startswith("SHOPIPE_")}
            assert shopipe, name
            assert shopipe <= known, f"{values}: {name} gets unknown {sorted(shopipe - known)}"


def test_credentials_come_only_from_secret_key_refs(matrix):
    for values, objs in matrix.items():
        for name, env in rendered_settings(objs):
            for key in SECRET_SETTINGS & set(env):
                assert "secretKeyRef" in env[key].get("valueFrom", {}), f"{values}: {name} {key}"
            if name.endswith("-receiver"):
                assert "SHOPIPE_SHOPIFY_SECRETS" in env, values
            else:
                assert "SHOPIPE_SHOPIFY_SECRETS" not in env, (
                    f"{values}: {name} needs no Shopify secret"
                )


def test_no_secret_material_outside_secrets(matrix, chart):
    """The inline credentials of the ci values appear in the Secret and nowhere else: not in a
    ConfigMap, an env literal, an annotation or a command line."""
    for values_file in chart.ci_values:
        secrets = chart.secret_values(values_file)
        objs = matrix[values_file.name]
        inline = [o for o in objs if o["kind"] == "Secret"]
        if secrets:
            assert len(inline) == 1, values_file.name
            stored = "\n".join(inline[0]["stringData"].values())
            assert all(s in stored for s in secrets)
        for o in objs:
            if o["kind"] == "Secret":
                continue
            text = yaml.safe_dump(o)
            for s in secrets:
                where = f"{o['kind']}/{o['metadata']['name']}"
                assert s not in text, f"{values_file.name}: a credential leaks into {where}"
        for cm in (o for o in objs if o["kind"] == "ConfigMap"):
            for key in cm.get("data", {}):
                assert key not in SECRET_SETTINGS, f"{cm['metadata']['name']}: {key}"
                assert not re.search(r"(?i)password|secret|access_key|token", key), (
                    f"{cm['metadata']['name']}: {key}"
                )


def test_worker_gets_time_to_drain_and_the_operator_owns_its_replicas(matrix, chart):
    for values, objs in matrix.items():
        worker = chart.one(objs, "Deployment", "-worker")
        cm = chart.one(objs, "ConfigMap", "-worker")
        drain = float(cm["data"]["SHOPIPE_DRAIN_SECONDS"])
        grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain, values
        operator_on = bool(chart.find(objs, "Deployment", "-operator"))
        assert ("replicas" in worker["spec"]) is not operator_on, values


def test_operator_leads_through_a_lease_with_two_replicas(matrix, chart):
    objs = matrix["full-values.yaml"]
    op = chart.one(objs, "Deployment", "-operator")
    assert op["spec"]["replicas"] == 2
    cm = chart.one(objs, "ConfigMap", "-operator")["data"]
    assert cm["SHOPIPE_LEADER_ELECTION"] == "true"
    assert cm["SHOPIPE_BACKEND"] == "kubernetes"
    assert (
        cm["SHOPIPE_WORKER_DEPLOYMENT"]
        == chart.one(objs, "Deployment", "-worker")["metadata"]["name"]
    )
    assert (cm["SHOPIPE_MIN_WORKERS"], cm["SHOPIPE_MAX_WORKERS"]) == ("2", "20")
    env = {e["name"]: e for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHOPIPE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert op["spec"]["template"]["spec"]["serviceAccountName"] == op["metadata"]["name"]
    # Only the operator talks to the API server.
    for name, spec in chart.pod_specs(objs):
        assert spec["automountServiceAccountToken"] is name.endswith("-operator"), name


OPERATOR_CODE = Path(__file__).resolve().parents[3] / "services/operator/shopipe_operator"
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def client_calls() -> set[tuple[str, str]]:
    """(API class, method) of every Kubernetes client method the operator's code names: the
    attributes it sets to ``k8s.<Something>Api(...)``, then ``self.<attribute>.<method>``."""
    calls = set()
    for path in OPERATOR_CODE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        apis: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                fn = node.value.func
                if isinstance(fn, ast.Attribute) and re.fullmatch(r"\w+V\d\w*Api", fn.attr):
                    apis |= {t.attr: fn.attr for t in node.targets if isinstance(t, ast.Attribute)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in apis
                and not node.attr.startswith("_")
            ):
                calls.add((apis[node.value.attr], node.attr))
    return calls


def rule_of(api: str, method: str) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) an API call needs, from the client's own request path."""
    src = inspect.getsource(getattr(getattr(k8s, api), f"_{method}_serialize"))
    http = re.search(r"method='(\w+)'", src)
    path = re.search(r"resource_path='([^']+)'", src)
    assert http, (api, method)
    assert path, (api, method)
    m = re.fullmatch(r"/apis?/(?:([^/]+)/)?v\w+/namespaces/\{namespace\}/(\w+)(/\{name\})?(/\w+)?",
                     path.group(1))  # fmt: skip
    assert m, path.group(1)
    group, resource, named, sub = m.groups()
    verb = VERBS[http.group(1)]
    if verb == "get" and not named:
        verb = "list"
    return ("" if group is None else group, resource + (sub or ""), verb)


def test_the_operator_code_is_read_for_its_api_calls():
    """The derivation below sees the calls it must: scaling, pods, evictions, leases."""
    calls = client_calls()
    assert ("CoreV1Api", "create_namespaced_pod_eviction") in calls
    assert ("AppsV1Api", "patch_namespaced_deployment_scale") in calls
    assert ("CoordinationV1Api", "replace_namespaced_lease") in calls
    assert rule_of("CoreV1Api", "list_namespaced_pod") == ("", "pods", "list")
    assert rule_of("CoreV1Api", "create_namespaced_pod_eviction") == ("", "pods/eviction", "create")


def test_operator_role_grants_exactly_the_verbs_it_uses(matrix, chart):
    objs = matrix["full-values.yaml"]
    role = chart.one(objs, "Role")
    granted = set()
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), rule
                    granted.add((g, r, v))
    # Exactly what the operator's code calls: a verb it stops using goes from the Role too.
    assert granted == {rule_of(api, method) for api, method in client_calls()}
    assert ("", "pods", "delete") not in granted  # restarts are evictions: budgets hold
    scale = next(r for r in role["rules"] if r["resources"] == ["deployments/scale"])
    assert scale["resourceNames"] == [chart.one(objs, "Deployment", "-worker")["metadata"]["name"]]
    binding = chart.one(objs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert [s["name"] for s in binding["subjects"]] == [
        chart.one(objs, "ServiceAccount", "-operator")["metadata"]["name"]
    ]
    assert not chart.find(objs, "ClusterRole")
    assert not chart.find(objs, "ClusterRoleBinding")
    assert not chart.find(matrix["external-redis-values.yaml"], "Role")


def test_ingress_routes_only_the_webhook_path_over_tls(matrix, chart):
    ing = chart.one(matrix["full-values.yaml"], "Ingress")
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    hosts = ["webhooks.shop.example", "webhooks2.shop.example"]
    assert ing["spec"]["tls"] == [{"secretName": "shopipe-receiver-tls", "hosts": hosts}]
    for rule in ing["spec"]["rules"]:
        assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [
            ("/webhooks/shopify", "Exact")
        ]
    assert [r["host"] for r in ing["spec"]["rules"]] == hosts


def test_receiver_autoscales_on_cpu_and_leaves_replicas_to_the_hpa(matrix, chart):
    objs = matrix["full-values.yaml"]
    hpa = chart.one(objs, "HorizontalPodAutoscaler")
    assert (
        hpa["spec"]["scaleTargetRef"]["name"]
        == chart.one(objs, "Deployment", "-receiver")["metadata"]["name"]
    )
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in chart.one(objs, "Deployment", "-receiver")["spec"]
    # The operator refuses to scale workers an HPA targets: the chart never makes one for them.
    assert all(
        h["spec"]["scaleTargetRef"]["name"].endswith("-receiver")
        for h in chart.find(objs, "HorizontalPodAutoscaler")
    )
