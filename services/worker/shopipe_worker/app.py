"""The worker process: consumer, sweeper and the ops HTTP server in one event loop.

SIGTERM or SIGINT: stop taking work, let in-flight segments finish within ``drain_seconds``,
release what did not, and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from shopipe import httpops
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings
from shopipe.logs import get_logger
from shopipe.metrics import set_build_info
from shopipe.sentinel import MasterClient, RedisTarget

from shopipe_worker.consumer import Consumer
from shopipe_worker.processor import Processor
from shopipe_worker.registry import Registry, build
from shopipe_worker.sweeper import Sweeper

log = get_logger(__name__)


class Worker:
    def __init__(self, settings: WorkerSettings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry or build(settings.builtin_handlers, settings.handlers, settings)
        self.master = MasterClient(
            RedisTarget.from_settings(settings), service="worker", pod=settings.pod_name
        )
        self.store = Buffer(settings, concurrency=max(8, 2 * settings.concurrency))
        self.processor = Processor(settings, self.master, self.store, self.registry)
        self.consumer = Consumer(settings, self.master, self.processor)
        self.sweeper = Sweeper(settings, self.master, self.store)
        self.stopping = asyncio.Event()
        self.http: httpops.OpsServer | None = None

    async def status(self) -> dict[str, Any]:
        return {
            "redis_master": self.master.address,
            **self.consumer.status(),
            **await self.registry.status(self.master),
        }

    async def ready(self) -> bool:
        return self.master.address is not None and not self.stopping.is_set()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: draining in-flight segments")
        self.stopping.set()
        self.consumer.stop()

    async def run(self) -> int:
        set_build_info("worker")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        app = httpops.ops_app("worker", self.status, self.ready)
        self.http = await httpops.serve(app, self.settings.http_host, self.settings.http_port)
        self.master.start_watch()
        log.info(
            "worker started",
            extra={
                "consumer": self.settings.pod_name,
                "http_port": self.http.port,
                "handlers": len(self.registry.names()),
            },
        )
        sweeping = asyncio.create_task(self.sweeper.run(self.stopping), name="sweeper")
        try:
            await self.consumer.run()
        finally:
            self.stopping.set()
            await sweeping
            await self.http.stop()
            await self.registry.close()
            await self.master.close()
            self.store.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        log.info("worker stopped")
        return 0
