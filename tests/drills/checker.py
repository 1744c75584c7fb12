"""The load generator and the checker of the partition drills.

The load generator plays Shopify: signed webhooks POSTed to both receivers (one "side" each),
each request given Shopify's 5 s, every attempt written to the ledger with its answer and
times. After the drill, with the network healed, what got no 200 is sent again (Shopify
retries), then the checker waits (bounded) for the effects and computes the figures:

- lost: acknowledged (a 200) and never applied (no count in ``shopipe:test:count``);
- doubled: applied twice by the ``ctx.tx`` effect (count above 1); handler runs recorded
  more than once are reported apart (``reruns``: allowed, the handler is at-least-once);
- unavailable: per side, the longest stretch without a 200 from the fault to the end;
- recovery: seconds from the heal until both sides answer 200 at full speed again (the rate
  of 200s over one second back to 80 % of the rate before the fault);
- the operator's actions: its restarts with their reasons, from its /status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis
from shopipe_devstack.redis import client
from shopipe_receiver.sender import signed_headers

from tests.drills.hosts import NetStack

TOPIC = "test/ping"
COUNT_KEY = "shopipe:test:count"
SHOPIFY_TIMEOUT = 5.0
SIDES = ("receiver-0", "receiver-1")
FULL_SPEED = 0.8


@dataclasses.dataclass
class Attempt:
    webhook_id: str
    side: str
    sent_at: float
    answered_at: float = 0.0
    status: int = 0  # 0: no answer within Shopify's timeout, or the connection failed


@dataclasses.dataclass
class Figures:
    drill: str
    sent: int
    acked: int
    lost: int
    doubled: int
    reruns: int
    unavailable: dict[str, float]
    recovery: float | None
    slowest: float
    statuses: dict[int, int]
    restarts: list[dict[str, Any]]
    dead_lettered: int
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        un = " ".join(f"{k}={v:.1f}s" for k, v in self.unavailable.items())
        rec = "never" if self.recovery is None else f"{self.recovery:.1f}s"
        ops = ", ".join(f"{r.get('pod')}:{r.get('reason')}" for r in self.restarts) or "none"
        st = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        extra = "".join(f" {k}={v}" for k, v in self.notes.items())
        return (
            f"[drill {self.drill}] sent={self.sent} acked={self.acked} lost={self.lost} "
            f"doubled={self.doubled} reruns={self.reruns} unavailable({un}) recovery={rec} "
            f"slowest={self.slowest:.2f}s statuses({st}) dead={self.dead_lettered} "
            f"operator restarts: {ops}{extra}"
        )


class Load:
    """Senders per side until ``stop``; every attempt in ``attempts``."""

    def __init__(self, stack: NetStack, per_side: int = 3) -> None:
        self.stack = stack
        self.per_side = per_side
        self.attempts: list[Attempt] = []
        self.bodies: dict[str, tuple[dict[str, str], bytes]] = {}
        self.body_extra: dict[str, Any] = {}  # e.g. {"sleep": 0.05}: a slower handler
        self.stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._n = 0

    def _new(self) -> str:
        self._n += 1
        body = json.dumps({"n": self._n, **self.body_extra}).encode()
        headers = signed_headers(TOPIC, body, self.stack.info.shopify_secret)
        wid = headers["X-Shopify-Webhook-Id"]
        self.bodies[wid] = (headers, body)
        return wid

    async def post(self, c: httpx.AsyncClient, wid: str, side: str) -> Attempt:
        headers, body = self.bodies[wid]
        a = Attempt(wid, side, time.monotonic())
        self.attempts.append(a)
        try:
            resp = await c.post(
                self.stack.url(side, "/webhooks/shopify"), content=body, headers=headers
            )
            a.status = resp.status_code
        except httpx.HTTPError:
            a.status = 0
        a.answered_at = time.monotonic()
        return a

    async def _sender(self, c: httpx.AsyncClient, side: str) -> None:
        while not self.stop.is_set():
            a = await self.post(c, self._new(), side)
            if a.status != 200:
                await asyncio.sleep(0.1)  # a refusing pipeline is not hammered

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=4 * self.per_side)
        async with httpx.AsyncClient(timeout=SHOPIFY_TIMEOUT, limits=limits) as c:
            await asyncio.gather(
                *(self._sender(c, side) for side in SIDES for _ in range(self.per_side))
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def finish(self) -> None:
        self.stop.set()
        if self._task is not None:
            await self._task

    def acks(self, since: float = 0.0) -> int:
        return sum(a.status == 200 and a.answered_at >= since for a in self.attempts)

    def acked_ids(self) -> set[str]:
        return {a.webhook_id for a in self.attempts if a.status == 200}

    async def resend_failed(self, timeout: float = 60.0) -> None:
        """Shopify's retries: every webhook with no 200 yet, again, until each has one."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=SHOPIFY_TIMEOUT) as c:
            while True:
                todo = sorted(set(self.bodies) - self.acked_ids())
                if not todo:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(todo)} webhooks still refused after the heal")
                for i in range(0, len(todo), 20):
                    chunk = todo[i : i + 20]
                    await asyncio.gather(
                        *(self.post(c, w, SIDES[n % 2]) for n, w in enumerate(chunk))
                    )
                await asyncio.sleep(0.2)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch within [start, end] holding none of ``times``."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def rate(attempts: list[Attempt], start: float, end: float) -> float:
    n = sum(a.status == 200 and start <= a.answered_at < end for a in attempts)
    return n / max(end - start, 1e-6)


def recovery_after(
    attempts: list[Attempt], baseline: float, healed: float, end: float
) -> float | None:
    """Seconds from ``healed`` to the first one-second window with 200s from both sides at
    ``FULL_SPEED`` of ``baseline`` (200s per second before the fault)."""
    t = healed
    while t + 1.0 <= end:
        window = [a for a in attempts if a.status == 200 and t <= a.answered_at < t + 1.0]
        sides = {a.side for a in window}
        if len(window) >= FULL_SPEED * baseline and sides == set(SIDES):
            return t + 1.0 - healed
        t += 0.25
    return None


class Checker:
    def __init__(self, stack: NetStack, load: Load, runs_dir: Path) -> None:
        self.stack = stack
        self.load = load
        self.runs_dir = runs_dir

    def _master(self) -> redis.Redis:
        return client(self.stack.current_master(), self.stack.info.redis_password, timeout=2.0)

    def counts(self) -> dict[str, int] | None:
        with contextlib.suppress(Exception), self._master() as r:
            raw = r.hgetall(COUNT_KEY)
            return {str(k): int(v) for k, v in raw.items()}
        return None

    def dead_lettered(self) -> int:
        with contextlib.suppress(Exception), self._master() as r:
            return len(list(r.scan_iter("shopipe:dead:*")))
        return -1

    def runs(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for path in self.runs_dir.glob("*.runs"):
            out.update(x for x in path.read_text().splitlines() if x)
        return out

    async def wait_applied(self, timeout: float) -> dict[str, int]:
        """Counts once every acknowledged webhook was applied, or at ``timeout``."""
        want = self.load.acked_ids()
        deadline = time.monotonic() + timeout
        got: dict[str, int] = {}
        while True:
            now = await asyncio.to_thread(self.counts)
            got = got if now is None else now
            if want <= set(got) or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.25)

    async def operator_restarts(self) -> list[dict[str, Any]]:
        if "operator" not in self.stack.pipeline:
            return []
        try:
            async with httpx.AsyncClient(timeout=2.0) as c:
                doc = (await c.get(self.stack.url("operator", "/status"))).json()
        except (httpx.HTTPError, ValueError):
            return [{"pod": "?", "reason": "operator /status did not answer"}]
        return [
            {"pod": r.get("pod"), "reason": r.get("reason"), "outcome": r.get("outcome")}
            for r in doc.get("restarts", [])
        ]

    async def figures(
        self,
        drill: str,
        fault_at: float,
        healed_at: float,
        baseline: float,
        wait: float = 60.0,
    ) -> Figures:
        end = time.monotonic()
        attempts = list(self.load.attempts)
        un = {
            side: longest_gap(
                [a.answered_at for a in attempts if a.side == side and a.status == 200],
                fault_at,
                end,
            )
            for side in SIDES
        }
        recovery = recovery_after(attempts, baseline, healed_at, end)
        slowest = max((a.answered_at - a.sent_at for a in attempts), default=0.0)
        statuses = Counter(a.status for a in attempts)
        await self.load.resend_failed()
        counts = await self.wait_applied(wait)
        acked = self.load.acked_ids()
        runs = self.runs()
        return Figures(
            drill=drill,
            sent=len(self.load.bodies),
            acked=len(acked),
            lost=len(acked - set(counts)),
            doubled=sum(v > 1 for v in counts.values()),
            reruns=sum(v > 1 for v in runs.values()),
            unavailable=un,
            recovery=recovery,
            slowest=slowest,
            statuses=dict(statuses),
            restarts=await self.operator_restarts(),
            dead_lettered=await asyncio.to_thread(self.dead_lettered),
        )
