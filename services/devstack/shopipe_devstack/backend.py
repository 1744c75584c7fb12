"""The operator's local backend: the processes of ``shopipe dev``, through its process table.

Found by the operator through the ``shopipe.operator_backends`` entry point ``local``
(SHOPIPE_BACKEND=local); its state dir is the dev stack's (SHOPIPE_STATE_DIR).

Workers are ``worker-<n>`` processes recorded in ``<state dir>/procs``; scaling starts or stops
them, and restarting a stale process stops it and starts it again under the same name and port
with the stack's own settings (what a Deployment's pod template does for a restarted pod).
Every table call touches files and waits on processes, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from shopipe.config import OperatorSettings, load_settings
from shopipe.logs import get_logger
from shopipe_operator.backends.base import Pod

from shopipe_devstack.info import StackInfo
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.services import Service, services, spawn_service
from shopipe_devstack.settings import DevSettings

log = get_logger(__name__)
PIPELINE = ("receiver", "worker")
STOP_SECONDS = 30.0  # a worker drains in-flight work on SIGTERM (SHOPIPE_DRAIN_SECONDS 20)


def _index(name: str) -> int:
    m = re.fullmatch(r"worker-(\d+)", name)
    return int(m.group(1)) if m else -1


class LocalBackend:
    name = "local"
    leader_election = False  # one operator per dev stack

    def __init__(self, settings: OperatorSettings, state_dir: Path | None = None) -> None:
        del settings  # the interface's argument: what this backend needs is the dev stack's
        self.state_dir = Path(state_dir or load_settings(DevSettings).state_dir).resolve()
        self.table = ProcessTable(self.state_dir)
        self.info = StackInfo.load(self.state_dir)

    def _services(self, kinds: tuple[str, ...]) -> list[Service]:
        return [s for s in services(self.table) if s.kind in kinds]

    async def current_replicas(self) -> int:
        return len(await asyncio.to_thread(self._services, ("worker",)))

    async def scale(self, replicas: int) -> None:
        await asyncio.to_thread(self._scale, replicas)

    def _scale(self, replicas: int) -> None:
        workers = self._services(("worker",))
        if len(workers) < replicas:
            taken = {w.name for w in workers} | {r.name for r in self.table.records()}
            n = 0
            for _ in range(replicas - len(workers)):
                while f"worker-{n}" in taken:
                    n += 1
                svc = spawn_service(self.table, self.info, "worker", f"worker-{n}")
                taken.add(svc.name)
                log.info("worker started", extra={"pod": svc.name, "port": svc.port})
        else:
            # Newest first: the oldest workers hold the warmest state and longest leases.
            surplus = sorted(workers, key=lambda w: (_index(w.name), w.name))[replicas:]
            for w in reversed(surplus):
                self.table.stop(w.name, STOP_SECONDS)
                log.info("worker stopped", extra={"pod": w.name})

    async def pods(self) -> list[Pod]:
        found = await asyncio.to_thread(self._services, PIPELINE)
        return [Pod(s.name, s.url(self.info.bind, "/status")) for s in found]

    async def restart(self, pod: Pod, reason: str) -> str:
        return await asyncio.to_thread(self._restart, pod)

    def _restart(self, pod: Pod) -> str:
        found = [s for s in self._services(PIPELINE) if s.name == pod.name]
        if not found:
            return "gone"
        svc = found[0]
        self.table.stop(svc.name, STOP_SECONDS)
        # Same name and port, the stack's settings: a misconfigured process comes back right.
        spawn_service(
            self.table, self.info, svc.kind, svc.name, port=svc.port, host=svc.host,
            netns=svc.netns,
        )  # fmt: skip
        return "restarted"

    async def scale_owner(self) -> str | None:
        return None

    async def event(self, reason: str, message: str, pod: str | None = None) -> None:
        log.info("event", extra={"event": reason, "detail": message, "pod": pod})

    async def close(self) -> None:
        return None
