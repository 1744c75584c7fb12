"""Wiring: settings → master watch, backlog probe, backend, elector, reconcile loop, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from importlib.metadata import entry_points
from typing import Any

from shopipe.buffer import Buffer
from shopipe.config import OperatorSettings
from shopipe.errors import ConfigError
from shopipe.httpops import OpsServer, ops_app, serve
from shopipe.logs import get_logger
from shopipe.metrics import set_build_info
from shopipe.sentinel import RedisTarget
from shopipe.stream import Keys

from shopipe_operator.backends.base import Backend
from shopipe_operator.backlog import BacklogProbe, Lister
from shopipe_operator.leader import AlwaysLeader, Elector, LeaseElector
from shopipe_operator.loop import Reconciler
from shopipe_operator.master import MasterWatch

log = get_logger(__name__)
SERVICE = "operator"


BACKENDS = "shopipe.operator_backends"


def make_backend(settings: OperatorSettings) -> Backend:
    """The backend named by SHOPIPE_BACKEND, found by entry point (the dev stack adds ``local``
    where it is installed: the operator never imports it)."""
    found = {ep.name: ep for ep in entry_points(group=BACKENDS)}
    if settings.backend not in found:
        names = ", ".join(sorted(found)) or "none"
        raise ConfigError(
            f"SHOPIPE_BACKEND: no backend {settings.backend!r} installed (installed: {names})"
        )
    backend: Backend = found[settings.backend].load()(settings)
    return backend


def make_elector(settings: OperatorSettings, backend: Backend) -> Elector:
    # Dry-run writes nothing, the Lease included: it must never displace the real operator.
    if not backend.leader_election or settings.dry_run or not settings.leader_election:
        return AlwaysLeader()
    api_client = getattr(backend, "api_client", None)
    return LeaseElector(
        api_client,
        settings.namespace,
        settings.lease_name,
        settings.pod_name,
        settings.lease_seconds,
    )


class Operator:
    """The whole operator in one event loop; ``start`` then ``stop`` (tests drive it so)."""

    def __init__(
        self,
        settings: OperatorSettings,
        *,
        backend: Backend | None = None,
        lister: Lister | None = None,
        elector: Elector | None = None,
    ) -> None:
        target = RedisTarget.from_settings(settings)
        if not target.sentinels:
            raise ConfigError("the operator follows the Sentinels: set SHOPIPE_SENTINELS")
        self.settings = settings
        self.backend = backend or make_backend(settings)
        self._buffer: Buffer | None = None
        if lister is None:
            self._buffer = lister = Buffer(settings, concurrency=2)
        self.elector = elector or make_elector(settings, self.backend)
        self.watch = MasterWatch(target)
        cap = max(1000, settings.max_workers * settings.target_backlog_per_worker)
        probe = BacklogProbe(
            settings.stream,
            settings.consumer_group,
            lister,
            settings.listing_interval_seconds,
            cap,
            waiting_key=Keys(settings.key_prefix).forward_waiting(),
            bound_key=Keys(settings.key_prefix).forward_bound(),
        )
        self.reconciler = Reconciler(settings, self.backend, self.watch, probe, self.elector)
        self.stopping = asyncio.Event()
        self.server: OpsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def status(self) -> dict[str, Any]:
        return self.reconciler.status()

    async def start(self) -> None:
        set_build_info(SERVICE)
        app = ops_app(SERVICE, self.status)
        self.server = await serve(app, self.settings.http_host, self.settings.http_port)
        await self.elector.tick()
        self.watch.start()
        self._tasks = [
            asyncio.create_task(self._lead(), name="leader"),
            asyncio.create_task(self.reconciler.run(self.stopping), name="reconcile"),
        ]
        log.info(
            "operator started",
            extra={
                "backend": self.backend.name,
                "port": self.server.port,
                "dry_run": self.settings.dry_run,
                "leader": self.elector.is_leader,
            },
        )

    async def _lead(self) -> None:
        """Renew the Lease at a third of its duration; a change of leadership wakes the loop."""
        period = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            was = self.elector.is_leader
            if await self.elector.tick() != was:
                self.watch.wake.set()

    async def stop(self) -> None:
        self.stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await self.elector.release()
        await self.watch.close()
        await self.reconciler.close()
        await self.backend.close()
        if self._buffer is not None:
            self._buffer.close()
        if self.server is not None:
            await self.server.stop()
        log.info("operator stopped")


async def run(settings: OperatorSettings) -> None:
    """Run until SIGTERM or SIGINT."""
    op = Operator(settings)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await op.start()
    try:
        await done.wait()
    finally:
        await op.stop()
