"""Pipeline processes (receiver, workers, operator) run against a dev stack.

Shared by `shopipe dev` and the operator's local backend: both start a service as
``python -m shopipe <kind>`` under the stack's process table, with the stack's SHOPIPE_* env and
a free HTTP port, so any process that knows the state dir can start, list and stop them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib.metadata import entry_points

from shopipe_devstack.component import wait_until
from shopipe_devstack.info import StackInfo
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.state import free_ports

KINDS = ("receiver", "worker", "operator")


@dataclasses.dataclass(frozen=True)
class Service:
    kind: str
    name: str
    pid: int
    port: int
    # Set when the process serves on an address of its own in a network namespace of its own
    # (the partition drills' hosts); a restart must put it back there.
    host: str | None = None
    netns: str | None = None

    def url(self, host: str, path: str = "") -> str:
        return f"http://{self.host or host}:{self.port}{path}"


def available_kinds() -> list[str]:
    """The services installed here: each adds its command by a ``shopipe.commands`` entry
    point named after it (shopipe.cli)."""
    names = {ep.name for ep in entry_points(group="shopipe.commands")}
    return [k for k in KINDS if k in names]


# Settings the stack sets itself: a caller's values for these never reach a service.
WIRED = frozenset(
    {
        "SHOPIPE_SENTINELS",
        "SHOPIPE_SENTINEL_MASTER",
        "SHOPIPE_REDIS_URL",
        "SHOPIPE_REDIS_PASSWORD",
        "SHOPIPE_SENTINEL_PASSWORD",
        "SHOPIPE_S3_ENDPOINT",
        "SHOPIPE_S3_REGION",
        "SHOPIPE_S3_BUCKET",
        "SHOPIPE_S3_ACCESS_KEY",
        "SHOPIPE_S3_SECRET_KEY",
        "SHOPIPE_SHOPIFY_SECRETS",
        "SHOPIPE_STATE_DIR",
        "SHOPIPE_HTTP_HOST",
        "SHOPIPE_HTTP_PORT",
        "SHOPIPE_POD_NAME",
        "SHOPIPE_BACKEND",
        "SHOPIPE_LEADER_ELECTION",
    }
)

# A laptop sees bursts of a few thousand webhooks, not a flash sale: scale on a smaller
# backlog and give workers back sooner than production defaults do, so `make dev` shows both.
DEV_OPERATOR = {
    "SHOPIPE_MIN_WORKERS": "1",
    "SHOPIPE_MAX_WORKERS": "4",
    "SHOPIPE_TARGET_BACKLOG_PER_WORKER": "25",
    "SHOPIPE_SCALE_DOWN_WINDOW_SECONDS": "30",
    "SHOPIPE_RECONCILE_SECONDS": "2",
    "SHOPIPE_LISTING_INTERVAL_SECONDS": "5",
}


def service_env(
    info: StackInfo, kind: str, name: str, port: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    # The caller's wiring must not point a service away from this stack; its other settings
    # (SHOPIPE_HANDLERS, tuning) pass through, as a Deployment's pod template would carry them.
    env = {k: v for k, v in os.environ.items() if k not in WIRED}
    env.update(info.receiver_env() if kind == "receiver" else info.service_env())
    env.update(
        {
            "SHOPIPE_HTTP_PORT": str(port),
            "SHOPIPE_POD_NAME": name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if kind == "operator":
        env.update({"SHOPIPE_BACKEND": "local", "SHOPIPE_LEADER_ELECTION": "false"})
        env.update({k: v for k, v in DEV_OPERATOR.items() if k not in os.environ})
    env.update(extra or {})
    return env


def spawn_service(
    table: ProcessTable,
    info: StackInfo,
    kind: str,
    name: str | None = None,
    *,
    port: int = 0,
    extra_env: Mapping[str, str] | None = None,
    host: str | None = None,
    netns: str | None = None,
) -> Service:
    """Start ``python -m shopipe <kind>`` named ``name`` (default: ``kind``) on ``port``
    (0: a free one). ``host`` and ``netns``: serve on that address, in that network
    namespace, instead of the stack's. Does not wait; see ``wait_healthy``."""
    name = name or kind
    port = port or free_ports(1, info.bind)[0]
    argv = [sys.executable, "-m", "shopipe", kind]
    env = service_env(info, kind, name, port, extra_env)
    meta = {"kind": kind, "port": str(port)}
    if host:
        env["SHOPIPE_HTTP_HOST"] = meta["host"] = host
    if netns:
        meta["netns"] = netns
    pid = table.spawn(name, argv, env, meta=meta, netns=netns)
    return Service(kind=kind, name=name, pid=pid, port=port, host=host, netns=netns)


def services(table: ProcessTable) -> list[Service]:
    """Running pipeline processes recorded in ``table`` (e.g. every ``worker-*``)."""
    out = []
    for rec in table.records():
        if "kind" in rec.meta and table.alive(rec.name):
            m = rec.meta
            out.append(
                Service(m["kind"], rec.name, rec.pid, int(m["port"]), m.get("host"), m.get("netns"))
            )
    return out


def healthz(host: str, port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1.0) as resp:
            return None if resp.status == 200 else f"/healthz answered {resp.status}"
    except urllib.error.HTTPError as e:
        return f"/healthz answered {e.code}"
    except OSError as e:
        return f"/healthz: {type(e).__name__}"


def wait_healthy(table: ProcessTable, svc: Service, host: str, timeout: float = 30.0) -> None:
    """Poll the service's /healthz; StackError naming it and its log if it dies or times out."""

    def dead() -> str | None:
        return None if table.alive(svc.name) else svc.name

    wait_until(
        svc.name,
        lambda: healthz(svc.host or host, svc.port),
        time.monotonic() + timeout,
        dead,
        lambda _n: table.log_path(svc.name),
    )
