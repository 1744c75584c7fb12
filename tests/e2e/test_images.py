"""The three images, run as the chart runs them, against the suite's local stack.

`make images` builds them into .shopipe/containers (scripts/images.sh). Each container here is
its Deployment as `helm template` renders it, turned into `podman run`: the same image and
args, the pod's and container's security contexts (read-only root, uid 10001, every capability
dropped, no privilege escalation), its emptyDir as a tmpfs and its ConfigMaps' env. Only the
wiring changes: the stack's Sentinels, S3 and credentials in place of the in-cluster Services
and Secret, and, since host networking shares the machine's ports, a free loopback port each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from shopipe.address import fmt
from shopipe.shopify import sample
from shopipe.stream import Keys
from shopipe_devstack import Stack
from shopipe_devstack.redis import client
from shopipe_devstack.state import free_ports
from shopipe_receiver.sender import DEFAULT_SHOP, signed_headers

from tests.k8s_fake import FakeKube

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / ".shopipe" / "containers"
HELM = ROOT / ".tools" / "bin" / "helm"
REGISTRY = "localhost/shopipe"
VERSION = "0.1.0"  # pyproject's version: the tag scripts/images.sh gives
UID = "10001"
TOPIC = "orders/create"


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """podman on the store `make images` filled, with the driver it chose. crun fails on rlimits
    and cgroups in this kind of sandbox, runc works; cgroupfs and file events: no systemd or
    journald to talk to."""
    driver = (STORE / "driver").read_text().strip()
    cmd = ["podman", "--root", str(STORE / "root"), "--runroot", str(STORE / "run")]
    cmd += ["--storage-driver", driver, "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
    cmd += ["--events-backend", "file", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


Obj = dict[str, Any]


@pytest.fixture(scope="module")
def images() -> None:
    """The images must exist: built by `make images` (`make test` builds them first)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: apt-get install podman runc (.ci/run does)")
    if not (STORE / "driver").is_file():
        pytest.fail(f"no image store in {STORE}: run `make images` first (`make test` does)")
    for kind in ("receiver", "worker", "operator"):
        if podman("image", "exists", f"{REGISTRY}/shopipe-{kind}:{VERSION}").returncode != 0:
            pytest.fail(f"no image shopipe-{kind}: run `make images` first (`make test` does)")


def rendered(bucket: str) -> list[Obj]:
    proc = subprocess.run(
        [str(HELM), "template", "shop", str(ROOT / "charts" / "shopipe"), "--namespace", "shop",
         "--set", f"s3.bucket={bucket}", "--set", "existingSecret=shopipe-credentials",
         "--set", f"image.registry={REGISTRY}",
         "--set", f"image.tag={VERSION}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def chart_env(objs: list[Obj], pod: Obj, container: Obj, secrets: dict[str, str]) -> dict[str, str]:
    """What the kubelet would give the container: envFrom ConfigMaps, then env."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in ref:
            # A key the stack has no value for (its Sentinels take no password) stays unset.
            key = ref["secretKeyRef"]["key"]
            if key in secrets:
                env[var["name"]] = secrets[key]
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = pod["metadata"].get("name", container["name"])
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[var["name"]] = "shop"
    return env


def run_flags(spec: Obj, container: Obj) -> list[str]:
    """The pod's security and volumes as podman flags; fails on anything it cannot translate."""
    sc = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    # --read-only-tmpfs=false: podman would add writable /tmp, /run, /var/tmp; a pod has none.
    flags = ["--read-only", "--read-only-tmpfs=false"]
    flags += ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    flags += [f"--cap-drop={cap}" for cap in sc["capabilities"]["drop"]]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"  # podman's default profile
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        assert "emptyDir" in vol, f"volume {mount['name']}: only emptyDir is translated"
        size = vol["emptyDir"].get("sizeLimit", "64Mi").removesuffix("i").lower()
        flags += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
    return flags


# Podman's default open-files and process limits are more than a sandbox like this one lets the
# container's init set (runc: "error setting rlimit type 7", then 6; the host's own values fail
# too). A smoke test needs few of either.
ULIMITS = ["--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"]


class Container:
    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        proc = podman("logs", self.name)
        return (proc.stdout + proc.stderr)[-3000:]

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout
        return out.strip() == "true"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            resp = httpx.get(self.url(path), timeout=2.0)
        except httpx.HTTPError:
            return 0, b""
        return resp.status_code, resp.content

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.get("/healthz")[0] != 200:
            assert self.running(), f"{self.name} exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"{self.name} not healthy:\n{self.logs()}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def pod(images: None, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``pod(component, mounts, **env) -> Container``: its Deployment run by podman, with
    podman ``mounts`` flags and ``env`` over the chart's; all removed at the end."""
    info = stack.info
    objs = rendered(info.s3_bucket)
    secrets = {
        "shopify-secrets": info.shopify_secret,
        "s3-access-key": info.s3_access_key,
        "s3-secret-key": info.s3_secret_key,
        "redis-password": info.redis_password,
    }
    started: list[Container] = []
    tag = uuid.uuid4().hex[:8]

    def start(component: str, mounts: Sequence[str] = (), **extra: str) -> Container:
        deploy = next(
            o for o in objs
            if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(f"-{component}")
        )  # fmt: skip
        spec = deploy["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        port, ops = free_ports(2, info.bind)
        name = f"shopipe-test-{component}-{tag}"
        env = chart_env(objs, {"metadata": {"name": name}}, container, secrets)
        wiring = info.receiver_env() if component == "receiver" else info.service_env()
        wiring.pop("SHOPIPE_STATE_DIR")
        env.update({**wiring, "SHOPIPE_HTTP_PORT": str(port), **extra})
        if "SHOPIPE_OPS_PORT" in env:  # the receiver's ops listener: free ports, host network
            env["SHOPIPE_OPS_PORT"] = str(ops)
        env_file = tmp_path_factory.mktemp("env") / f"{component}.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.chmod(0o600)
        proc = podman(
            "run", "--detach", "--name", name, "--pull", "never", "--network", "host",
            *ULIMITS,
            *run_flags(spec, container), "--env-file", str(env_file),
            *mounts, container["image"], *container.get("args", []),
        )  # fmt: skip
        c = Container(name, port)
        started.append(c)  # removed at the end even if it never ran
        assert proc.returncode == 0, proc.stderr
        c.wait_healthy()
        return c

    try:
        yield start
    finally:
        for c in started:
            podman("rm", "--force", "--time", "5", c.name)


def kubeconfig(kube: FakeKube, tmp: Path) -> Path:
    """A kubeconfig naming the fake API server, readable by uid 10001 (no in-cluster account
    in podman: the client falls back to it, as on a developer's machine)."""
    path = tmp / "kube" / "config"
    path.parent.mkdir()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(doc))
    for p in (path.parent, path):
        os.chown(p, int(UID), int(UID))
    return path


def test_receiver_serves_a_signed_webhook_and_the_worker_processes_it(
    stack: Stack, pod: Any
) -> None:
    receiver = pod("receiver")
    worker = pod("worker")
    assert receiver.get("/healthz")[0] == 200
    # As the chart runs it: /metrics is on the ops port only, never on the webhook port.
    assert receiver.get("/metrics")[0] == 404
    body = sample(TOPIC)
    headers = signed_headers(TOPIC, body, stack.info.shopify_secret)
    resp = httpx.post(receiver.url("/webhooks/shopify"), content=body, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text

    done = Keys("shopipe").done_webhook(DEFAULT_SHOP, TOPIC, headers["X-Shopify-Webhook-Id"])
    deadline = time.monotonic() + 60
    with client(stack.current_master(), stack.info.redis_password, timeout=2.0) as r:
        while not r.exists(done):
            assert worker.running(), f"the worker exited:\n{worker.logs()}"
            assert time.monotonic() < deadline, f"not processed:\n{worker.logs()}"
            time.sleep(0.2)


def test_operator_starts_with_the_kubernetes_backend_and_reports_the_master(
    stack: Stack, pod: Any, tmp_path: Path
) -> None:
    kube = FakeKube(namespace="shop").start()
    kube.state.replicas["shopipe-worker"] = 1
    try:
        config = kubeconfig(kube, tmp_path)
        operator = pod(
            "operator",
            ["--volume", f"{config.parent}:/kube:ro"],
            KUBECONFIG="/kube/config",
            SHOPIPE_WORKER_DEPLOYMENT="shopipe-worker",
            SHOPIPE_DRY_RUN="true",
            SHOPIPE_MIN_WORKERS="0",
        )
        _reports_the_master(operator, stack)
    finally:
        kube.stop()


def _reports_the_master(operator: Any, stack: Stack) -> None:
    want = fmt(stack.current_master())
    deadline = time.monotonic() + 60
    while True:
        code, raw = operator.get("/status")
        master = json.loads(raw).get("master") if code == 200 else None
        if master == want:
            break
        assert operator.running(), f"the operator exited:\n{operator.logs()}"
        assert time.monotonic() < deadline, f"/status says {master!r}, not {want}"
        time.sleep(0.2)


def test_the_images_hold_no_dev_stack(images: None) -> None:
    # The dev stack (services/devstack) is a distribution of its own; shopipe's wheel has none of
    # it, so neither `shopipe dev` nor the operator's local backend exists in an image.
    probe = "import importlib.util as u; print(u.find_spec('shopipe_devstack'))"
    for kind in ("receiver", "worker", "operator"):
        image = f"{REGISTRY}/shopipe-{kind}:{VERSION}"
        proc = podman("run", "--rm", "--network", "none", *ULIMITS, "--entrypoint", "python",
                      image, "-c", probe)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "None", f"{kind}: {proc.stdout}"
