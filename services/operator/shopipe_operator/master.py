"""The current Redis master, as a majority of the configured Sentinels report it.

One Sentinel can be partitioned away or misconfigured; acting on its word could restart every
healthy pod. So the master is the address more than half of the *configured* Sentinels name
(silent ones count against), and without such a majority the master is unknown and nothing
that depends on it is done. ``+switch-master`` events wake the reconcile loop early.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe.address import Address, fmt
from shopipe.backoff import Backoff
from shopipe.logs import get_logger
from shopipe.sentinel import RedisTarget, ask_once, ask_sentinels, majority

from shopipe_operator import metrics

log = get_logger(__name__)


@dataclass(frozen=True)
class MasterView:
    address: Address | None
    answers: dict[str, str | None] = field(default_factory=dict)

    @property
    def text(self) -> str | None:
        return fmt(self.address) if self.address else None


class MasterWatch:
    """Polls the Sentinels on demand and listens to their ``+switch-master`` channel."""

    def __init__(self, target: RedisTarget, wake: asyncio.Event | None = None) -> None:
        self.target = target
        self.wake = wake or asyncio.Event()
        self.current: Address | None = None
        self.last_known: Address | None = None
        self.former: list[Address] = []  # masters before the current one (stale suspects)
        self.failovers = 0
        self._had_majority: bool | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def poll(self) -> MasterView:
        answers = await ask_sentinels(self.target)
        addr = majority(answers, len(self.target.sentinels))
        view = MasterView(addr, {fmt(s): fmt(a) if a else None for s, a in answers.items()})
        self._update(view)
        return view

    def _update(self, view: MasterView) -> None:
        addr = view.address
        if addr is None:
            if self._had_majority is not False:
                log.warning(
                    "no sentinel majority: acting on nothing master-dependent",
                    extra={"answers": view.answers},
                )
        elif self.last_known is not None and addr != self.last_known:
            self.failovers += 1
            metrics.FAILOVERS.inc()
            if self.last_known not in self.former:
                self.former.append(self.last_known)
            log.warning("failover", extra={"old": fmt(self.last_known), "new": fmt(addr)})
        elif self.last_known is None:
            log.info("redis master", extra={"address": fmt(addr)})
        if addr is not None:
            self.former = [a for a in self.former if a != addr]
            self.last_known = addr
        self._had_majority = addr is not None
        self.current = addr
        metrics.set_master(view.text)

    async def replicas(self) -> list[Address]:
        """Replicas the Sentinels know (first one that answers), for CLIENT LIST probes."""

        async def known(r: Redis) -> list[Address]:
            out = []
            for row in await r.sentinel_slaves(self.target.master_name) or []:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    out.append((str(row["ip"]), int(row["port"])))
            return out

        t = self.target
        for s in t.sentinels:
            found = await ask_once(s, t.sentinel_password, t.timeout, known, **t.tls_options())
            if found is not None:
                return found
        return []

    async def suspects(self) -> list[Address]:
        """Servers that are not the master now: former masters and known replicas."""
        out = list(self.former)
        for a in await self.replicas():
            if a not in out:
                out.append(a)
        return [a for a in out if a != self.current]

    def start(self) -> None:
        for s in self.target.sentinels:
            self._tasks.append(asyncio.create_task(self._listen(s), name=f"switch-master:{fmt(s)}"))

    async def _listen(self, sentinel: Address) -> None:
        delays = Backoff(0.1, 5.0, jitter=0.5)
        while True:
            r = _sentinel_client(sentinel, self.target, None)
            pubsub = r.pubsub()
            try:
                await pubsub.subscribe("+switch-master")
                delays.reset()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        log.info("+switch-master", extra={"sentinel": fmt(sentinel)})
                        self.wake.set()
            except (rex.RedisError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await r.aclose()
            # A dead Sentinel: try again later; polling still covers us meanwhile.
            await asyncio.sleep(delays.wait())

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()


def _sentinel_client(addr: Address, target: RedisTarget, read_timeout: float | None) -> Redis:
    return Redis(
        host=addr[0],
        port=addr[1],
        password=target.sentinel_password,
        socket_timeout=read_timeout,
        socket_connect_timeout=target.timeout,
        decode_responses=True,
        **target.tls_options(),
    )
