"""The reconcile loop: observe (master, backlog, pods), decide (pure), act (backend).

Woken early by ``+switch-master`` and leadership changes, run every ``reconcile_seconds``
anyway as a safety net. Only the leader acts; dry-run decides and logs but writes nothing.
Every decision is counted with its reason and logged when it changes something or changes
its mind, so the log tells the story without repeating "steady" every five seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe import metrics as core_metrics
from shopipe.address import Address, fmt
from shopipe.config import OperatorSettings
from shopipe.errors import ShopipeError
from shopipe.logs import get_logger
from shopipe.sentinel import RedisTarget, client, connection_name

from shopipe_operator import metrics, redismem
from shopipe_operator.backends.base import Backend, Pod
from shopipe_operator.backlog import BacklogProbe
from shopipe_operator.leader import Elector
from shopipe_operator.master import MasterView, MasterWatch
from shopipe_operator.scaling import ScaleDecision, ScalePolicy, Scaler
from shopipe_operator.stale import StaleTracker, probe_pods

log = get_logger(__name__)


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        backend: Backend,
        watch: MasterWatch,
        probe: BacklogProbe,
        elector: Elector,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.backend = backend
        self.watch = watch
        self.probe = probe
        self.elector = elector
        self.clock = clock
        self.target: RedisTarget = watch.target
        self.scaler = Scaler(ScalePolicy.from_settings(settings))
        self.tracker = StaleTracker(settings.stale_grace_seconds)
        self.restarts: deque[dict[str, Any]] = deque(maxlen=20)
        self.scaled: deque[dict[str, Any]] = deque(maxlen=20)
        self.view = MasterView(None)
        self.last_scale: ScaleDecision | None = None
        self.stale: list[str] = []
        self._redis: Redis | None = None
        self._redis_addr: Address | None = None
        self._said: dict[str, str] = {}  # topic -> last reason logged
        self.reconciles = 0
        self.memory: redismem.Memory | None = None

    # --- observing ---
    async def _master_redis(self, addr: Address | None) -> Redis | None:
        if addr != self._redis_addr and self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None
        self._redis_addr = addr
        # Like every shopipe process, say which master this one talks to (docs/metrics.md).
        core_metrics.set_master("operator", fmt(addr) if addr else None)
        if addr is None:
            return None
        if self._redis is None:
            self._redis = client(
                addr,
                self.target.password,
                self.target.timeout,
                client_name=connection_name("operator", self.s.pod_name),
                db=self.target.db,
                **self.target.tls_options(),
            )
        return self._redis

    def _decide(self, topic: str, kind: str, reason: str, message: str, **extra: Any) -> None:
        """Count every decision; log it at info when it acts or differs from the last one
        on the same ``topic`` (scale, restart, leader), at debug otherwise."""
        metrics.decision(kind, reason)
        loud = kind != "skip" or self._said.get(topic) != reason
        self._said[topic] = reason
        extra.update(kind=kind, reason=reason, dry_run=self.s.dry_run)
        log.log(20 if loud else 10, message, extra=extra)

    async def _observe_memory(self) -> None:
        """Redis memory, exported by every replica (the alert must not wait for a leader)."""
        r = await self._master_redis(self.view.address)
        if r is None:
            return
        try:
            self.memory = await redismem.read(r)
        except (rex.RedisError, OSError) as e:
            log.warning("cannot read Redis memory", extra={"error": type(e).__name__})
            return
        redismem.publish(self.memory)

    # --- the reconcile ---
    async def reconcile(self) -> None:
        self.reconciles += 1
        self.view = await self.watch.poll()
        await self._observe_memory()
        if not self.elector.is_leader:
            self._decide("leader", "skip", "not_leader", "not the leader: observing only")
            return
        # Each step on its own: an API hiccup while scaling must not delay a stale restart.
        for step in (self._scale, self._restart_stale):
            try:
                await step()
            except (ShopipeError, rex.RedisError, OSError) as e:
                log.warning(
                    "reconcile step failed",
                    extra={"step": step.__name__.strip("_"), "error": f"{type(e).__name__}: {e}"},
                )

    async def _scale(self) -> None:
        r = await self._master_redis(self.view.address)
        backlog = await self.probe.measure(r)
        if backlog.lag is None and r is not None:
            await self._master_redis(None)  # reconnect next time
        total = backlog.total
        if total is not None:
            metrics.BACKLOG.set(total)
        current = await self.backend.current_replicas()
        metrics.CURRENT.set(current)
        d = self.scaler.decide(total, current, self.clock())
        self.last_scale = d
        if d.desired is not None:
            metrics.DESIRED.set(d.desired)
        info = {"backlog": total, "current": current, "desired": d.desired}
        if not d.changes:
            self._decide("scale", "skip", d.reason, "replicas unchanged", **info)
            return
        owner = await self.backend.scale_owner()
        if owner is not None:
            why = f"{owner} targets the worker Deployment; refusing to scale it"
            if self._said.get("scale") != "hpa_present" and not self.s.dry_run:
                await self.backend.event("ScaleRefused", why)
            self._decide("scale", "skip", "hpa_present", why, **info)
            return
        assert d.replicas is not None
        if self.s.dry_run:
            self._decide(
                "scale",
                "skip",
                "dry_run",
                f"dry run: would scale to {d.replicas}",
                **info,
                would=d.reason,
            )
            return
        await self.backend.scale(d.replicas)
        metrics.CURRENT.set(d.replicas)
        self.scaled.append(
            {"from": current, "to": d.replicas, "reason": d.reason, "at": time.time()}
        )
        await self.backend.event("Scaled", f"workers {current} -> {d.replicas}: {d.reason}")
        self._decide("scale", "scale", d.reason, f"scaled workers to {d.replicas}", **info)

    async def _restart_stale(self) -> None:
        master = self.view.text
        if master is None:
            self.tracker.observe(None, [], self.clock())
            self.stale = []
            self._decide("restart", "skip", "master_unknown", "master unknown: restarting nothing")
            return
        pods = {p.name: p for p in await self.backend.pods()}
        suspects = await self.watch.suspects()
        seen = await probe_pods(
            [(p.name, p.status_url) for p in pods.values()],
            suspects,
            self.target.password,
            self.target.timeout,
            **self.target.tls_options(),
        )
        self.stale = self.tracker.observe(master, seen, self.clock())
        reported = {p.name: p.reported_master for p in seen}
        for i, name in enumerate(self.stale):
            reason = self.tracker.reason(name)
            info = {"pod": name, "reported": reported.get(name), "master": master}
            if i >= self.s.max_restarts_at_once:
                self._decide("restart", "skip", "restart_limit", "stale pod waits its turn", **info)
                continue
            if self.s.dry_run:
                self._decide(
                    "restart",
                    "skip",
                    "dry_run",
                    f"dry run: would restart {name}",
                    **info,
                    would=reason,
                )
                continue
            await self._restart(pods[name], reason, info)

    async def _restart(self, pod: Pod, reason: str, info: dict[str, Any]) -> None:
        outcome = await self.backend.restart(pod, reason)
        if outcome == "blocked":
            self._decide(
                "restart",
                "skip",
                "disruption_budget",
                "restart refused by a disruption budget",
                **info,
            )
            return
        self.tracker.forget(pod.name)
        metrics.STALE_RESTARTS.inc()
        self.restarts.append(
            {
                "pod": pod.name,
                "reason": reason,
                "outcome": outcome,
                "master": info["master"],
                "at": time.time(),
            }
        )
        msg = f"{pod.name} uses a stale Redis master ({reason}); {outcome}"
        await self.backend.event("StaleMaster", msg, pod.name)
        self._decide("restart", "restart", reason, "restarted stale pod", **info, outcome=outcome)

    # --- running ---
    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop``; a failing reconcile is logged and retried, never fatal."""
        while not stop.is_set():
            self.watch.wake.clear()
            try:
                await self.reconcile()
            except (ShopipeError, rex.RedisError, OSError) as e:
                log.warning("reconcile failed", extra={"error": f"{type(e).__name__}: {e}"})
            except Exception:
                log.exception("reconcile crashed")
            await _wait_any(stop, self.watch.wake, self.s.reconcile_seconds)

    def status(self) -> dict[str, Any]:
        d = self.last_scale
        b = self.probe.last
        return {
            "reconciles": self.reconciles,
            "master": self.view.text,
            "sentinels": self.view.answers,
            "majority": self.view.address is not None,
            "failovers": self.watch.failovers,
            "leader": self.elector.is_leader,
            "dry_run": self.s.dry_run,
            "backend": self.backend.name,
            "backlog": None
            if b is None
            else {
                "lag": b.lag,
                "pending": b.pending,
                "incoming": b.incoming,
                "waiting": b.waiting,
                "bound": b.bound,
                "total": b.total,
            },
            "replicas": None
            if d is None
            else {"current": d.current, "desired": d.desired, "reason": d.reason},
            "stale": self.stale,
            "restarts": list(self.restarts),
            "scaled": list(self.scaled),
            "former_masters": [fmt(a) for a in self.watch.former],
            "redis_memory": None if self.memory is None else self.memory.as_dict(),
        }

    async def close(self) -> None:
        await self._master_redis(None)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, period: float) -> None:
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=period, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
