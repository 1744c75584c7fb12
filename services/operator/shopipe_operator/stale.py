"""Which pods use a stale Redis master: a pure decision, and the probes that feed it.

A pod is stale when, for longer than the grace period, its ``/status`` names a master other
than the current one, or its named connection (``shopipe:<role>:<pod>``) sits on a Redis
server that is not the master. A pod that does not answer is not evidence of anything: it is
never restarted for silence. Nothing is stale while the master itself is unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis
from shopipe.address import Address
from shopipe.logs import get_logger
from shopipe.sentinel import ask_once, parse_connection_name

log = get_logger(__name__)


@dataclass(frozen=True)
class PodSeen:
    """What was seen of one pod in one reconcile."""

    name: str
    reported_master: str | None = None  # from /status; None when it did not answer
    connected_to: tuple[str, ...] = ()  # non-master servers holding its named connection

    def off_master(self, master: str) -> str | None:
        """Why this pod looks off the master right now, or None."""
        if self.reported_master is not None and self.reported_master != master:
            return "status_names_old_master"
        if self.connected_to:
            return "connection_on_old_master"
        return None


class StaleTracker:
    """Remembers since when each pod has looked off the master; decides who is stale."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._since: dict[str, tuple[float, str]] = {}

    def observe(self, master: str | None, pods: Iterable[PodSeen], now: float) -> list[str]:
        """Names of the stale pods, longest stale first. Empty while the master is unknown."""
        if master is None:
            # Without a master there is no "stale": forget, so the grace starts anew.
            self._since.clear()
            return []
        seen: dict[str, tuple[float, str]] = {}
        for pod in pods:
            why = pod.off_master(master)
            if why is None:
                continue
            since = self._since.get(pod.name, (now, why))[0]
            seen[pod.name] = (since, why)
        self._since = seen
        stale = [n for n, (since, _) in seen.items() if now - since >= self.grace]
        return sorted(stale, key=lambda n: (seen[n][0], n))

    def reason(self, name: str) -> str:
        return self._since.get(name, (0.0, "unknown"))[1]

    def forget(self, name: str) -> None:
        """After a restart the new process gets its own grace period."""
        self._since.pop(name, None)


def pod_of_connection(client_name: str) -> str | None:
    """``shopipe:worker:pod-1`` → ``pod-1``; None for other names and the operator itself."""
    parsed = parse_connection_name(client_name)
    if parsed is None or parsed[0] == "operator":
        return None
    return parsed[1]


async def fetch_status(client: httpx.AsyncClient, url: str) -> str | None:
    """The ``redis_master`` a pod reports on /status; None when it does not answer."""
    try:
        resp = await client.get(url)
        if resp.status_code != 200:
            return None
        value = resp.json().get("redis_master")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


async def connections_on(addr: Address, password: str | None, wait: float, **tls: Any) -> list[str]:
    """Pod names with a named shopipe connection on the Redis server ``addr`` (``tls``: the
    target's TLS options)."""

    async def names(r: Redis) -> list[str]:
        return [str(c.get("name", "")) for c in await r.client_list(_type="normal")]

    found = await ask_once(addr, password, wait, names, **tls) or []  # a dead server: none
    return [p for p in (pod_of_connection(n) for n in found) if p]


async def probe_pods(
    pods: Sequence[tuple[str, str | None]],
    old_servers: Sequence[tuple[str, int]],
    password: str | None,
    wait: float,
    **tls: Any,
) -> list[PodSeen]:
    """Ask each pod (name, status URL) for its master and each non-master server for its
    connections, all at once; every probe is bounded by ``wait`` seconds."""
    async with httpx.AsyncClient(timeout=wait) as client:
        statuses = await asyncio.gather(
            *(fetch_status(client, url) if url else _none() for _, url in pods)
        )
    conns = await asyncio.gather(*(connections_on(a, password, wait, **tls) for a in old_servers))
    where: dict[str, list[str]] = {}
    for addr, names in zip(old_servers, conns, strict=True):
        for name in names:
            where.setdefault(name, []).append(f"{addr[0]}:{addr[1]}")
    return [
        PodSeen(name, status, tuple(where.get(name, ())))
        for (name, _), status in zip(pods, statuses, strict=True)
    ]


async def _none() -> None:
    return None
