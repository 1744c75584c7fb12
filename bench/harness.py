"""The bench's view of the local stack: start it, run servers and the load generator, read
their metrics and memory.

Everything runs under one dev-stack state dir in a fresh temp directory, through the dev stack's
process table, so every process the bench starts is stopped with the stack (deadline, then
SIGKILL), even when a phase fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from shopipe_devstack import Stack, StackInfo
from shopipe_devstack.seaweed import s3_client
from shopipe_devstack.state import free_ports

from bench.loadgen import Spec

REPO = Path(__file__).resolve().parent.parent
PATH = "/webhooks/shopify"


def base_env() -> dict[str, str]:
    """This process's environment without SHOPIPE_* (shopipe rejects unknown names), with the
    repo on PYTHONPATH so a worker can import ``bench.handler``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy; RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except OSError:
        return 0, b""


def scrape(port: int) -> dict[str, float]:
    """Samples of ``/metrics`` on loopback ``port``, labels folded into the name
    (``name{a="b"}``); sums over labels are ``total(...)``'s job."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def total(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    acc = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(w in rest for w in want):
            acc += value
    return acc


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/<pid>/status (``VmRSS`` in kB, ``Threads``...), by name;
    empty if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        first = rest.split(maxsplit=1)[:1]
        if first and first[0].isdigit():
            out[name] = int(first[0])
    return out


def rss(pid: int, status: dict[str, int] | None = None) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes (VmRSS, VmHWM); ``status`` if already read."""
    fields = proc_status(pid) if status is None else status
    return fields.get("VmRSS", 0) * 1024, fields.get("VmHWM", 0) * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/<pid>/stat fields 14 and 15)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A process of the bench listening on a loopback port."""

    def __init__(self, name: str, pid: int, port: int, metrics_port: int | None = None) -> None:
        self.name = name
        self.pid = pid
        self.port = port
        self.metrics_port = metrics_port if metrics_port is not None else port

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def rss(self) -> tuple[int, int]:
        return rss(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


class Bench:
    """The local stack plus the processes the bench runs on it."""

    def __init__(self, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="shopipe-bench-"))
        self.keep = keep
        self.stack = Stack(self.dir / "state", fresh=True)
        self._seq = 0

    @property
    def info(self) -> StackInfo:
        return self.stack.info

    def start(self) -> None:
        self.stack.start()

    def stop(self) -> None:
        try:
            self.stack.stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Bench:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _name(self, what: str) -> str:
        self._seq += 1
        return f"bench-{what}-{self._seq}"

    def create_bucket(self, bucket: str) -> None:
        """A second bucket, so one phase's segments never reach another phase's worker."""
        info = self.info
        s3 = s3_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key, 5.0)
        try:
            s3.create_bucket(Bucket=bucket)
        finally:
            s3.close()

    def log_of(self, server: Server) -> Path:
        return self.stack.table.log_path(server.name)

    def stop_server(self, server: Server, timeout: float = 10.0) -> None:
        self.stack.stop_process(server.name, timeout)

    def _ready(self, name: str, port: int, path: str) -> None:
        def check() -> bool:
            if not self.stack.table.alive(name):
                log = self.stack.table.log_path(name)
                raise RuntimeError(f"bench: {name} exited during start; log: {log}")
            return http_get(f"http://127.0.0.1:{port}{path}", 1.0)[0] == 200

        wait_for(f"{name} on port {port}", check, 60.0)

    def app(self, kind: str) -> Server:
        """A baseline app (``bare``, ``naive`` or ``sink``, see bench.apps)."""
        name = self._name(kind)
        port_file = self.dir / f"{name}.port"
        info = self.info
        env = base_env() | {
            "BENCH_SHOPIFY_SECRET": info.shopify_secret,
            "BENCH_S3_ENDPOINT": info.s3_endpoint,
            "BENCH_S3_BUCKET": info.s3_bucket,
            "BENCH_S3_ACCESS_KEY": info.s3_access_key,
            "BENCH_S3_SECRET_KEY": info.s3_secret_key,
        }
        argv = [sys.executable, "-m", "bench.apps", kind, str(port_file)]
        pid = self.stack.spawn(name, argv, env)

        def port() -> int:
            if not self.stack.table.alive(name):
                raise RuntimeError(f"bench: {name} exited; log: {self.stack.table.log_path(name)}")
            return int(port_file.read_text()) if port_file.exists() else 0

        return Server(name, pid, wait_for(name, port, 60.0))

    def receiver(self, **settings: str) -> Server:
        """``shopipe receiver`` on a free port; ``settings`` are extra SHOPIPE_* values."""
        name = self._name("receiver")
        (port,) = free_ports(1)
        env = (
            base_env()
            | self.info.receiver_env()
            | {
                "SHOPIPE_HTTP_PORT": str(port),
                "SHOPIPE_POD_NAME": name,
                "SHOPIPE_LOG_LEVEL": "warning",
            }
            | settings
        )
        pid = self.stack.spawn(name, [sys.executable, "-m", "shopipe", "receiver"], env)
        self._ready(name, port, "/readyz")
        return Server(name, pid, port)

    def worker(self, handler_file: Path | None = None, **settings: str) -> Server:
        """``shopipe worker`` with the bench handler (``bench.handler``) loaded."""
        name = self._name("worker")
        (port,) = free_ports(1)
        env = (
            base_env()
            | self.info.service_env()
            | {
                "SHOPIPE_HTTP_PORT": str(port),
                "SHOPIPE_POD_NAME": name,
                "SHOPIPE_LOG_LEVEL": "warning",
                "SHOPIPE_HANDLERS": "bench.handler",
            }
            | settings
        )
        if handler_file is not None:
            env["BENCH_DONE_FILE"] = str(handler_file)
        pid = self.stack.spawn(name, [sys.executable, "-m", "shopipe", "worker"], env)
        self._ready(name, port, "/healthz")
        return Server(name, pid, port)

    def load(self, server: Server, **spec: Any) -> dict[str, Any]:
        """Run the load generator (its own process) against ``server``; its JSON result.

        Each run gets its own seed, so webhook and event ids never repeat within a bench run
        (a repeat would be a duplicate delivery, which the worker rightly skips)."""
        self._seq += 1
        spec.setdefault("seed", 1000 + self._seq)
        full = Spec(
            host="127.0.0.1",
            port=server.port,
            path=PATH,
            secret=self.info.shopify_secret,
            **spec,
        )
        arg = json.dumps(full.__dict__)
        budget = full.seconds + full.timeout + 60.0
        done = subprocess.run(
            [sys.executable, "-m", "bench.loadgen"],
            input=arg.encode(),
            capture_output=True,
            env=base_env(),
            timeout=budget,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench: load generator failed: {done.stderr.decode()[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result
