"""Prometheus in the local stack: scrapes every shopipe process, evaluates the chart's alerts.

Targets come from the stack's process table (receiver, workers, operator: whatever has a
``kind`` and a ``port``), written as a ``file_sd`` file that a thread rewrites whenever the
table changes, so workers the operator starts or stops are picked up without a reload. Labels
are the ones the chart's ServiceMonitor gives in Kubernetes (job and service = the Service name,
pod, container, endpoint, namespace), with ``honor_labels`` so the processes' own ``service``
label wins, as with the ServiceMonitor's ``honorLabels``: the chart's rules and dashboard work
unchanged. The rules are charts/shopipe/files/alerts.rules.yaml itself, never a copy; only a
test asking for ``time_scale`` gets a derived file with every duration divided by it, so alerts
with ``for: 1m`` or ``[15m]`` windows fire and resolve within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopipe_devstack.component import Component
from shopipe_devstack.info import StackInfo
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.state import free_ports

if TYPE_CHECKING:
    from shopipe_devstack.stack import Stack

RULES_IN_CHART = Path("charts/shopipe/files/alerts.rules.yaml")
KINDS = ("receiver", "worker", "operator")
# Port names of the chart's Services (the ServiceMonitor's `endpoint` label).
ENDPOINT = {"receiver": "http", "worker": "metrics", "operator": "metrics"}
RELEASE = "shopipe"  # names as `helm install shopipe charts/shopipe` gives them
NAMESPACE = "local"
REFRESH_SECONDS = 0.5


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def chart_rules() -> Path | None:
    """The chart's rule file, found from this source tree (an editable install, `make dev`)
    or the working directory; None when neither has it (an installed wheel)."""
    for base in (*Path(__file__).resolve().parents, Path.cwd()):
        path = base / RULES_IN_CHART
        if path.is_file():
            return path
    return None


# --- durations, for time-scaled rules in tests ---

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = r"(?:\d+(?:ms|s|m|h|d|w))+"


def duration_ms(text: str) -> int:
    return sum(int(n) * _UNITS_MS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w)", text))


def _scaled(text: str, scale: int) -> str:
    ms = max(1, duration_ms(text) // scale)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scale_rules(text: str, scale: int) -> str:
    """``text`` (a rule file) with every ``for:``, range and ``offset`` duration divided by
    ``scale``; everything else, alert names and expressions included, left as it is."""

    def sub(m: re.Match[str]) -> str:
        return m.group(1) + _scaled(m.group(2), scale) + m.group(3)

    text = re.sub(rf"(^\s*for:\s*)({_DURATION})(\s*$)", sub, text, flags=re.M)
    text = re.sub(rf"(\[)({_DURATION})(\]|:)", sub, text)
    return re.sub(rf"(\boffset\s+)({_DURATION})(\b)", sub, text)


# --- targets ---


def targets(table: ProcessTable, host: str) -> list[dict[str, Any]]:
    """file_sd target groups for the running pipeline processes of ``table``."""
    groups = []
    for rec in table.records():
        kind, port = rec.meta.get("kind"), rec.meta.get("port")
        if kind not in KINDS or not port or not table.alive(rec.name):
            continue
        service = f"{RELEASE}-{kind}"
        labels = {"job": service, "service": service, "namespace": NAMESPACE}
        labels |= {"pod": rec.name, "container": kind, "endpoint": ENDPOINT[kind]}
        groups.append({"targets": [f"{host}:{port}"], "labels": labels})
    return sorted(groups, key=lambda g: g["labels"]["pod"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)  # Prometheus must never read half a file


class Prometheus(Component):
    name = "prometheus"
    ready_timeout = 30.0

    def __init__(
        self,
        table: ProcessTable,
        info: StackInfo,
        *,
        binary: str,
        rules: Path | None,
        port: int = 0,
        interval: str = "1s",
        time_scale: int = 1,
    ) -> None:
        super().__init__(table)
        self.info = info
        self.binary = binary
        self.chart_rules = rules
        self.port = port or free_ports(1, info.bind)[0]
        self.interval = interval
        self.time_scale = time_scale
        self.home = table.state_dir / "prometheus"
        self.sd_file = self.home / "targets.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.info.bind}:{self.port}"

    @property
    def rules(self) -> Path | None:
        """The rule file Prometheus loads: the chart's, or its time-scaled derivative."""
        if self.chart_rules is None or self.time_scale == 1:
            return self.chart_rules
        return self.home / f"alerts.rules.x{self.time_scale}.yaml"

    def config_text(self) -> str:
        # JSON is YAML: no YAML library needed at run time.
        doc = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": [str(self.rules)] if self.rules else [],
            "scrape_configs": [
                {
                    "job_name": RELEASE,
                    "honor_labels": True,  # as the ServiceMonitor's honorLabels
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.sd_file)], "refresh_interval": "5s"}],
                }
            ],
        }
        return json.dumps(doc, indent=2) + "\n"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.home / "data", ignore_errors=True)  # a dev stack starts afresh
        rules = self.rules
        if self.chart_rules is not None and rules is not None and rules != self.chart_rules:
            header = f"# Generated from {self.chart_rules}, durations / {self.time_scale}.\n"
            scaled = scale_rules(self.chart_rules.read_text(), self.time_scale)
            _write_atomic(rules, header + scaled)
        self.refresh()
        conf = self.home / "prometheus.yml"
        conf.write_text(self.config_text())
        argv = [
            self.binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address={self.info.bind}:{self.port}",
            "--log.level=warn",
        ]
        self.table.spawn(self.name, argv, meta={"port": str(self.port)})
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="prometheus-targets")
        self._thread.daemon = True
        self._thread.start()

    def refresh(self) -> list[dict[str, Any]]:
        """Rewrite the targets file if the set of pipeline processes changed."""
        groups = targets(ProcessTable(self.table.state_dir), self.info.bind)
        text = json.dumps(groups, indent=1) + "\n"
        with contextlib.suppress(FileNotFoundError):
            if self.sd_file.read_text() == text:
                return groups
        _write_atomic(self.sd_file, text)
        return groups

    def _follow(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            with contextlib.suppress(OSError, ValueError):
                self.refresh()

    def check(self) -> str | None:
        url = f"http://{self.info.bind}:{self.port}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return None if resp.status == 200 else f"/-/ready answered {resp.status}"
        except urllib.error.HTTPError as e:
            return f"/-/ready answered {e.code}"
        except OSError as e:
            return f"/-/ready: {type(e).__name__}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        super().stop()


def add(stack: Stack, **kwargs: Any) -> bool:
    """Add Prometheus to ``stack`` (before ``start``) when the binary is on PATH; False if not.
    ``kwargs`` go to ``Prometheus`` (``interval``, ``time_scale``, ``port``)."""
    binary = prometheus_binary()
    if binary is None:
        return False
    rules = chart_rules()

    def factory(table: ProcessTable, info: StackInfo) -> Component:
        return Prometheus(table, info, binary=binary, rules=rules, **kwargs)

    stack.add(factory)
    return True


def of(stack: Stack) -> Prometheus | None:
    """The stack's Prometheus component, if it has one."""
    return next((c for c in stack.components if isinstance(c, Prometheus)), None)


def summary_line(stack: Stack) -> str:
    """The `shopipe dev` summary line: the URL, or why there is none."""
    prom = of(stack)
    if prom is None:
        return "  prometheus      skipped: no prometheus binary on PATH"
    rules = f"alerts {prom.rules}" if prom.rules else "no alert rules (chart not found)"
    return f"  prometheus      {prom.url}  ({rules})"
