"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go does it.

Only the holder acts, so two operator replicas are safe. Expiry is judged on this process's
own monotonic clock (the Lease record unchanged for ``duration`` seconds), never by comparing
another node's timestamps with ours: clocks skew. Writes carry the resourceVersion read, so
two candidates racing for a free Lease cannot both win (the loser gets 409 Conflict).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any, Protocol

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from shopipe.logs import get_logger

from shopipe_operator import metrics

log = get_logger(__name__)


class Elector(Protocol):
    is_leader: bool

    async def tick(self) -> bool: ...

    async def release(self) -> None: ...


class AlwaysLeader:
    """The local backend and ``SHOPIPE_LEADER_ELECTION=false``: one operator, always acting."""

    is_leader = True

    async def tick(self) -> bool:
        metrics.LEADER.set(1)
        return True

    async def release(self) -> None:
        metrics.LEADER.set(0)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaseElector:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = k8s.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.clock = clock
        self.is_leader = False
        self._renewed_at: float | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    def _spec(self, transitions: int, acquired: datetime.datetime | None) -> Any:
        now = _now()
        return k8s.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.duration)),
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    async def tick(self) -> bool:
        """Acquire or renew once; returns whether this process leads now."""
        try:
            leading = await asyncio.to_thread(self._try)
        except Exception as e:
            # Whatever failed (API down, a surprising answer), a leader that cannot renew keeps
            # acting only while the Lease surely is still its own, then steps down.
            leading = (
                self.is_leader
                and self._renewed_at is not None
                and self.clock() - self._renewed_at < self.duration * 2 / 3
            )
            log.warning("lease not renewed", extra={"error": type(e).__name__})
        self._set(leading)
        return leading

    def _set(self, leading: bool) -> None:
        if leading != self.is_leader:
            log.info(
                "leadership acquired" if leading else "leadership lost",
                extra={"identity": self.identity, "lease": self.name},
            )
        self.is_leader = leading
        metrics.LEADER.set(1 if leading else 0)

    def _try(self) -> bool:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
        except ApiException as e:
            if e.status != 404:
                raise
            body = k8s.V1Lease(
                metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(0, None),
            )
            try:
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=5)
            except ApiException as e2:
                if e2.status == 409:
                    return False  # another candidate created it first
                raise
            self._renewed_at = self.clock()
            return True
        spec = lease.spec or k8s.V1LeaseSpec()
        holder = spec.holder_identity or ""
        record = (holder, spec.renew_time, spec.lease_transitions)
        now = self.clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.lease_duration_seconds or self.duration
        if holder == self.identity:
            new = self._spec(spec.lease_transitions or 0, spec.acquire_time)
        elif not holder or now - self._observed_at >= duration:
            new = self._spec((spec.lease_transitions or 0) + 1, None)
        else:
            return False
        lease.spec = new
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
        except ApiException as e:
            if e.status == 409:
                return False  # someone wrote it since we read: they won this round
            raise
        self._renewed_at = self.clock()
        return True

    async def release(self) -> None:
        """Hand the Lease back on shutdown so a standby takes over without waiting it out."""
        if not self.is_leader:
            return

        def give_back() -> None:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)

        try:
            await asyncio.to_thread(give_back)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            log.warning("lease not released", extra={"error": type(e).__name__})
        self._set(False)
