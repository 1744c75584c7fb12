"""One drill's timeline: load on both sides, a fault, the heal, the figures.

``Drill`` holds a running ``NetStack`` with its pipeline, the faults and the load generator; a
test drives it: ``warm`` (load on, baseline rate), ``fault``, ``hold``, ``heal``, ``settle``
(bounded wait for full speed), ``finish`` (figures printed and kept).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from shopipe.address import Address, fmt
from shopipe_devstack.redis import client

from tests.drills.checker import SIDES, Checker, Figures, Load, recovery_after
from tests.drills.faults import Faults
from tests.drills.hosts import NetStack

RESULTS_ENV = "DRILL_RESULTS"  # a JSON-lines file the figures are appended to (make drills)


class Drill:
    def __init__(
        self,
        name: str,
        stack: NetStack,
        faults: Faults,
        report: Callable[[str], None],
    ) -> None:
        self.name = name
        self.stack = stack
        self.faults = faults
        self.report = report
        self.runs_dir = stack.state_dir / "runs"
        self.load = Load(stack)
        self.checker = Checker(stack, self.load, self.runs_dir)
        self.baseline = 0.0
        self.fault_at = 0.0
        self.healed_at = 0.0

    async def until(
        self,
        what: str,
        check: Callable[[], bool],
        timeout: float,
        detail: Callable[[], object] | None = None,
    ) -> float:
        """Poll ``check`` (sync, run off the loop) until true; seconds it took. On timeout the
        AssertionError holds ``detail()`` (what was seen)."""
        t0 = time.monotonic()
        while not await asyncio.to_thread(check):
            if time.monotonic() - t0 > timeout:
                seen = f"; seen: {await asyncio.to_thread(detail)}" if detail else ""
                raise AssertionError(
                    f"[drill {self.name}] timed out after {timeout:.0f} s: {what}{seen}"
                )
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def warm(self, seconds: float = 3.0) -> None:
        """Load on; once both sides answer 200, measure the rate of 200s for ``seconds``."""
        self.load.start()
        await self.until(
            "200s from both sides",
            lambda: {a.side for a in self.load.attempts if a.status == 200} == set(SIDES),
            30,
        )
        t0 = time.monotonic()
        await asyncio.sleep(seconds)  # a measuring window, not a synchronisation
        n = self.load.acks(since=t0)
        self.baseline = n / (time.monotonic() - t0)
        assert self.baseline > 0, "no 200 before the fault"

    def fault(self, inject: Callable[[Faults], None]) -> None:
        self.fault_at = time.monotonic()
        inject(self.faults)

    async def hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the fault's duration under load

    def heal(self) -> None:
        self.faults.heal()
        self.healed_at = time.monotonic()

    async def settle(self, timeout: float = 30.0) -> None:
        """Keep the load on until full speed is back (or ``timeout``), plus a second."""

        def back() -> bool:
            end = time.monotonic()
            got = recovery_after(self.load.attempts, self.baseline, self.healed_at, end)
            return got is not None

        t0 = time.monotonic()
        while not back() and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)

    async def finish(self, wait: float = 60.0, **notes: object) -> Figures:
        await self.load.finish()
        figs = await self.checker.figures(
            self.name, self.fault_at, self.healed_at or time.monotonic(), self.baseline, wait
        )
        figs.notes.update(baseline=f"{self.baseline:.0f}/s", **notes)
        self.report(figs.line())
        path = os.environ.get(RESULTS_ENV)
        if path:
            with Path(path).open("a") as f:
                f.write(json.dumps(figs.__dict__, default=str) + "\n")
        return figs

    # --- what the drills look at ---

    def pod_master(self, host: str) -> str | None:
        """The Redis master ``host``'s process says it uses (/status), None if silent."""
        try:
            resp = httpx.get(self.stack.url(host, "/status"), timeout=1.0)
            doc = resp.json()
            value = doc.get("redis_master", doc.get("master"))  # the operator says "master"
        except (httpx.HTTPError, ValueError):
            return None
        return value if isinstance(value, str) else None

    def pod_masters(self) -> dict[str, str | None]:
        return {h: self.pod_master(h) for h in self.stack.pipeline}

    def pods_on(self, master: Address) -> bool:
        want = fmt(master)
        return all(m == want for m in self.pod_masters().values())

    async def until_pods_on(self, master: Address, timeout: float = 60.0) -> float:
        return await self.until(
            f"every pod on {fmt(master)}", lambda: self.pods_on(master), timeout, self.pod_masters
        )

    def role(self, addr: Address) -> str | None:
        try:
            with client(addr, self.stack.info.redis_password) as r:
                return str(r.role()[0])
        except redis.RedisError:
            return None

    def replica_synced(self, addr: Address) -> bool:
        try:
            with client(addr, self.stack.info.redis_password) as r:
                info = r.info("replication")
        except redis.RedisError:
            return False
        return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")

    def refuses_writes(self, addr: Address) -> bool:
        """True once ``addr`` answers a write with an error (NOREPLICAS, READONLY)."""
        try:
            with client(addr, self.stack.info.redis_password) as r:
                r.set("drill:probe", "1")
        except redis.ResponseError:
            return True
        except redis.RedisError:
            return False
        return False

    def pending_of(self, consumer: str) -> int:
        def count(r: redis.Redis) -> int:
            rows: Any = r.xpending_range(
                "shopipe:webhooks", "shopipe-workers", "-", "+", 1000, consumername=consumer
            )
            return len(rows)

        try:
            with client(self.stack.current_master(), self.stack.info.redis_password) as r:
                return count(r)
        except Exception:
            return 0
