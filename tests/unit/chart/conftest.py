"""Fixtures of the chart tests: the real helm and kubectl from .tools/bin, and renders cached
per session (helm template is quick, but the matrix is rendered by many tests)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "shopipe"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
TOOLS = ROOT / ".tools" / "bin"
RELEASE = "shop"
NAMESPACE = "webhooks"
# A Kubernetes version kubernetes-validate ships schemas for, and that LKE offers.
K8S_VERSION = "1.33.0"

Obj = dict[str, Any]
# What a cluster with the Prometheus Operator serves (helm template has no cluster to ask); the
# chart leaves its ServiceMonitor and PrometheusRule out without them.
MONITORING_APIS = [
    "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
]  # fmt: skip


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make tools` (scripts/install-tools.sh) first")
    return path


def run(
    args: list[str | Path], *, check: bool = True, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def parse_docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Chart:
    """Renders the chart with helm; each distinct set of arguments is rendered once."""

    helm: Path
    kubectl: Path
    _cache: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def template(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        key = tuple(str(a) for a in args)
        if key not in self._cache:
            cmd: list[str | Path] = [self.helm, "template", RELEASE, CHART]
            cmd += ["--namespace", NAMESPACE, *MONITORING_APIS, *args]
            self._cache[key] = run(cmd, check=False)
        return self._cache[key]

    def render(self, *args: str | Path) -> list[Obj]:
        proc = self.template(*args)
        if proc.returncode != 0:
            pytest.fail(f"helm template {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return parse_docs(proc.stdout)

    def render_file(self, values: Path) -> list[Obj]:
        return self.render("-f", values)

    root = ROOT
    chart_dir = CHART
    ci_values = CI_VALUES
    release = RELEASE
    namespace = NAMESPACE
    k8s_version = K8S_VERSION

    def run(
        self, args: list[str | Path], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(args, check=check)

    @staticmethod
    def pod_specs(objs: list[Obj]) -> list[tuple[str, Obj]]:
        """(kind/name, pod spec) of every workload object."""
        out = []
        for o in objs:
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                out.append((f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
        return out

    @staticmethod
    def containers(spec: Obj) -> list[Obj]:
        return list(spec.get("initContainers", [])) + list(spec["containers"])

    @staticmethod
    def find(objs: list[Obj], kind: str, name_suffix: str = "") -> list[Obj]:
        return [
            o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)
        ]

    @staticmethod
    def one(objs: list[Obj], kind: str, name_suffix: str = "") -> Obj:
        found = Chart.find(objs, kind, name_suffix)
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
        return found[0]

    @staticmethod
    def secret_values(values_file: Path) -> list[str]:
        """The credentials a ci values file sets inline (they must reach only a Secret)."""
        values = yaml.safe_load(values_file.read_text()) or {}
        s = values.get("secrets") or {}
        out = [str(v) for v in s.get("shopifySecrets") or []]
        out += [
            str(s[k])
            for k in ("s3AccessKey", "s3SecretKey", "redisPassword", "sentinelPassword")
            if s.get(k)
        ]
        return out


@pytest.fixture(scope="session")
def chart() -> Chart:
    return Chart(helm=tool("helm"), kubectl=tool("kubectl"))


@pytest.fixture(scope="session")
def matrix(chart: Chart) -> dict[str, list[Obj]]:
    """Every ci/*-values.yaml rendered: name of the values file -> objects."""
    assert CI_VALUES, "charts/shopipe/ci has no *-values.yaml"
    return {p.name: chart.render_file(p) for p in CI_VALUES}
