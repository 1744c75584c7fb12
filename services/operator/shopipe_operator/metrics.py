"""The operator's metrics, exactly those of docs/metrics.md, on the shared registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from shopipe.metrics import REGISTRY

BACKLOG = Gauge(
    "shopipe_operator_backlog",
    "Backlog used for scaling (lag + pending + incoming), less segments waiting on a forward "
    "destination (throttled or circuit open).",
    registry=REGISTRY,
)
DESIRED = Gauge(
    "shopipe_operator_desired_replicas", "Replicas the operator wants.", registry=REGISTRY
)
CURRENT = Gauge(
    "shopipe_operator_current_replicas",
    "Replicas the worker Deployment has.",
    registry=REGISTRY,
)
MASTER_INFO = Gauge(
    "shopipe_operator_master_info",
    "1 for the master the Sentinel majority reports.",
    ["address"],
    registry=REGISTRY,
)
MAJORITY = Gauge(
    "shopipe_operator_sentinel_majority",
    "1 when a majority of Sentinels agree on the master.",
    registry=REGISTRY,
)
FAILOVERS = Counter("shopipe_operator_failovers_total", "Master changes seen.", registry=REGISTRY)
STALE_RESTARTS = Counter(
    "shopipe_operator_stale_restarts_total",
    "Pods restarted for using a stale master.",
    registry=REGISTRY,
)
DECISIONS = Counter(
    "shopipe_operator_decisions_total",
    "Every decision (scale, restart, skip) with its reason.",
    ["kind", "reason"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "shopipe_operator_leader", "1 while this replica holds the Lease.", registry=REGISTRY
)

_master: list[str] = []


def set_master(address: str | None) -> None:
    """Point the master-info gauge at ``address`` (None: no majority); old series go away."""
    for old in _master:
        if old != address:
            MASTER_INFO.remove(old)
    _master.clear()
    MAJORITY.set(0 if address is None else 1)
    if address is not None:
        MASTER_INFO.labels(address=address).set(1)
        _master.append(address)


def decision(kind: str, reason: str) -> None:
    DECISIONS.labels(kind=kind, reason=reason).inc()


# Redis memory of the master (shopipe_operator.redismem reads INFO memory each reconcile).
REDIS_USED = Gauge(
    "shopipe_redis_used_memory_bytes",
    "Bytes the Redis master has allocated (INFO memory used_memory).",
    registry=REGISTRY,
)
REDIS_MAXMEMORY = Gauge(
    "shopipe_redis_maxmemory_bytes",
    "The Redis master's maxmemory; 0 is no limit.",
    registry=REGISTRY,
)
REDIS_FRAGMENTATION = Gauge(
    "shopipe_redis_memory_fragmentation_ratio",
    "Resident set size over used_memory of the Redis master (mem_fragmentation_ratio).",
    registry=REGISTRY,
)
