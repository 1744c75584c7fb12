"""Kit of the whole-pipeline drills: a stack's receiver, workers and operator as real processes
(under the stack's process table, so the stack stops them), signed webhooks over HTTP, and the
ledger.

Workers load the counting handler of test_worker_drill_handlers: each ``test/*`` webhook adds 1
to its webhook id in ``shopipe:test:count`` inside its done-marker transaction, so "processed
exactly once" is: every acknowledged id is there with count 1, and no id has more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings, load_settings
from shopipe_devstack import Stack
from shopipe_devstack.redis import client
from shopipe_devstack.services import Service, spawn_service, wait_healthy
from shopipe_receiver.sender import signed_headers

HERE = Path(__file__).parent
TOPIC = "test/ping"
COUNT_KEY = "shopipe:test:count"
STREAM, GROUP = "shopipe:webhooks", "shopipe-workers"
# Drill workers: the counting handler, and timings short enough that claims, retries and
# sweeps happen within a test (also used by test_worker_drills).
DRILL_WORKER_ENV = {
    "SHOPIPE_HANDLERS": "test_worker_drill_handlers",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    "SHOPIPE_BLOCK_SECONDS": "0.2",
    "SHOPIPE_CLAIM_IDLE_SECONDS": "1.5",
    "SHOPIPE_RETRY_BASE_SECONDS": "0.1",
    "SHOPIPE_RETRY_MAX_SECONDS": "0.5",
    "SHOPIPE_SWEEP_INTERVAL_SECONDS": "0.5",
    "SHOPIPE_SWEEP_GRACE_SECONDS": "2",
}
WORKER_ENV = {**DRILL_WORKER_ENV, "SHOPIPE_DRAIN_SECONDS": "3"}
# The operator only observes here: workers it would (re)start get the stack's settings, not
# the counting handler, so it must neither scale nor restart them.
OPERATOR_ENV = {
    "SHOPIPE_RECONCILE_SECONDS": "0.3",
    "SHOPIPE_LISTING_INTERVAL_SECONDS": "0.5",
    "SHOPIPE_REDIS_TIMEOUT_SECONDS": "0.5",
    "SHOPIPE_STALE_GRACE_SECONDS": "600",
}

T = TypeVar("T")


@dataclasses.dataclass
class Sent:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # of the last attempt; 0: no answer (connection refused or cut)


async def until(what: str, check: Callable[[], bool | Awaitable[bool]], timeout: float) -> None:
    """Poll ``check`` (plain or async) every 0.1 s until it is true; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


class Pipeline:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.receivers: list[Service] = []
        self.workers: list[Service] = []
        self.operator: Service | None = None
        self.sent: list[Sent] = []
        self.body_extra: dict[str, Any] = {}  # e.g. {"sleep": 0.05}: a slower handler

    # --- processes ---

    def _spawn(self, kind: str, name: str, env: dict[str, str], port: int = 0) -> Service:
        svc = spawn_service(self.stack.table, self.stack.info, kind, name, port=port, extra_env=env)
        wait_healthy(self.stack.table, svc, self.stack.info.bind, 60.0)
        return svc

    def start(
        self,
        workers: int = 2,
        operator: bool = False,
        receivers: int = 1,
        worker_env: dict[str, str] | None = None,
        operator_env: dict[str, str] | None = None,
        receiver_env: dict[str, str] | None = None,
    ) -> Pipeline:
        quiet = {"SHOPIPE_LOG_LEVEL": "warning", **(receiver_env or {})}
        self.receivers = [self._spawn("receiver", f"receiver-{i}", quiet) for i in range(receivers)]
        w_env = {**WORKER_ENV, **(worker_env or {})}
        self.workers = [self._spawn("worker", f"worker-{i}", w_env) for i in range(workers)]
        if operator:
            n = str(workers)
            env = {**OPERATOR_ENV, "SHOPIPE_MIN_WORKERS": n, "SHOPIPE_MAX_WORKERS": n}
            self.operator = self._spawn("operator", "operator", {**env, **(operator_env or {})})
        return self

    def status(self, svc: Service) -> dict[str, Any] | None:
        """``svc``'s /status; None when it does not answer."""
        try:
            resp = httpx.get(svc.url(self.stack.info.bind, "/status"), timeout=2.0)
            doc: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError):
            return None
        return doc

    @property
    def url(self) -> str:
        return self.url_of(0)

    def url_of(self, n: int) -> str:
        """The webhook URL of receiver ``n`` (modulo the receivers: senders spread over all)."""
        svc = self.receivers[n % len(self.receivers)]
        return svc.url(self.stack.info.bind, "/webhooks/shopify")

    # --- webhooks ---

    def webhook(self, body: bytes | None = None, topic: str = TOPIC) -> Sent:
        if body is None:
            body = json.dumps({"n": len(self.sent), **self.body_extra}).encode()
        headers = signed_headers(topic, body, self.stack.info.shopify_secret)
        return Sent(headers["X-Shopify-Webhook-Id"], headers, body)

    async def post(self, c: httpx.AsyncClient, sent: Sent, receiver: int = 0) -> int:
        try:
            resp = await c.post(self.url_of(receiver), content=sent.body, headers=sent.headers)
            sent.status = resp.status_code
        except httpx.HTTPError:
            sent.status = 0
        return sent.status

    async def load(self, stop: asyncio.Event, concurrency: int = 6, limit: int = 20_000) -> None:
        """Send fresh webhooks from ``concurrency`` senders until ``stop`` (at most ``limit``)."""

        async def sender(c: httpx.AsyncClient, n: int) -> None:
            while not stop.is_set() and len(self.sent) < limit:
                sent = self.webhook()
                self.sent.append(sent)
                if await self.post(c, sent, n) != 200:
                    await asyncio.sleep(0.05)  # a refusing pipeline is not hammered

        async with httpx.AsyncClient(timeout=30.0) as c:
            await asyncio.gather(*(sender(c, n) for n in range(concurrency)))

    async def resend(self, batch: Iterable[Sent], rounds: int = 20) -> None:
        """Deliver again what got no 200, same id and signature, as Shopify retries."""
        todo = [s for s in batch if s.status != 200]
        async with httpx.AsyncClient(timeout=30.0) as c:
            for _ in range(rounds):
                if not todo:
                    return
                await asyncio.gather(*(self.post(c, s, n) for n, s in enumerate(todo)))
                todo = [s for s in todo if s.status != 200]
                if todo:
                    await asyncio.sleep(0.2)
        raise AssertionError(f"{len(todo)} webhooks still refused after {rounds} rounds")

    def acked(self, since: int = 0) -> list[str]:
        return [s.webhook_id for s in self.sent[since:] if s.status == 200]

    def answered(self, status: int, since: int = 0) -> int:
        return sum(s.status == status for s in self.sent[since:])

    # --- the ledger ---

    def master(self) -> redis.Redis:
        return client(self.stack.current_master(), self.stack.info.redis_password, timeout=2.0)

    def read(self, fn: Callable[[redis.Redis], T]) -> T | None:
        """``fn`` on the current master; None while there is none (failover, restart)."""
        with contextlib.suppress(Exception), self.master() as r:
            return fn(r)
        return None

    def counts(self) -> dict[str, int] | None:
        raw = self.read(lambda r: r.hgetall(COUNT_KEY))  # decode_responses: str keys
        return None if raw is None else {str(k): int(v) for k, v in raw.items()}

    async def wait_processed(self, ids: Iterable[str], timeout: float = 60.0) -> dict[str, int]:
        """Wait until every id in ``ids`` was handled; the whole count table, then."""
        want = set(ids)
        got: dict[str, int] = {}

        async def done() -> bool:
            nonlocal got
            now = await asyncio.to_thread(self.counts)
            got = got if now is None else now
            return want <= set(got)

        try:
            await until(f"{len(want)} webhooks to be processed", done, timeout)
        except AssertionError as e:
            missing = sorted(want - set(got))
            where = await self.diagnose(missing)
            raise AssertionError(
                f"{e}: {len(missing)} never processed, e.g. {missing[:3]}; {where}"
            ) from e
        return got

    async def diagnose(self, missing: list[str]) -> str:
        """Where the webhooks in ``missing`` are: their object (still in incoming/ or gone),
        their stream entry (none, pending with whom and how often, or acknowledged) and
        done-markers; counted by that state, so a failure says which step lost them."""
        want = set(missing)
        store = Buffer(load_settings(WorkerSettings, self.stack.info.service_env()))
        in_store: dict[str, str] = {}
        try:
            for obj in await store.list(segment.INCOMING):
                with contextlib.suppress(Exception):
                    for rec in segment.decode(await store.get(obj.key)):
                        low = {k.lower(): v for k, v in rec.headers.items()}
                        wid = low.get("x-shopify-webhook-id", "")
                        if wid in want:
                            in_store[wid] = obj.key
        finally:
            store.close()

        def redis_side(r: redis.Redis) -> tuple[dict[str, str], dict[str, str], set[str]]:
            entries: dict[str, str] = {}  # segment key -> entry id
            rows: Any = r.xrange(STREAM, "-", "+")  # decode_responses: str ids and fields
            for eid, fields in rows:
                entries[fields.get("key", "")] = eid
            pending: dict[str, str] = {}
            held: Any = r.xpending_range(STREAM, GROUP, "-", "+", 100_000)
            for row in held:
                pending[row["message_id"]] = f"{row['consumer']}x{row['times_delivered']}"
            marked = {w for w in want if any(True for _ in r.scan_iter(f"*:done:wh:*:{w}"))}
            return entries, pending, marked

        got = self.read(redis_side)
        if got is None:
            return "no master to diagnose"
        entries, pending, marked = got
        states: dict[str, int] = {}
        for w in missing:
            key = in_store.get(w)
            if key is None:
                state = "object gone"
            elif key not in entries:
                state = "object kept, no stream entry"
            elif entries[key] in pending:
                state = f"object kept, entry pending ({pending[entries[key]].split('x')[1]}x)"
            else:
                state = "object kept, entry acknowledged"
            state += ", marked done" if w in marked else ""
            states[state] = states.get(state, 0) + 1
        found = "by state: " + "; ".join(f"{k}: {v}" for k, v in sorted(states.items()))
        return f"{found}; nodes: {self.nodes()}"

    def nodes(self) -> str:
        """Each Redis node's replication state, and what the first Sentinel says of them."""
        out = []
        for addr in self.stack.info.redis_nodes:
            try:
                with client(addr, self.stack.info.redis_password, timeout=2.0) as r:
                    i: Any = r.info("replication")
            except Exception as e:
                out.append(f"{addr[1]}: {type(e).__name__}")
                continue
            if i.get("role") == "master":
                out.append(
                    f"{addr[1]}: master offset={i.get('master_repl_offset')} "
                    f"replicas={i.get('connected_slaves')}"
                )
            else:
                out.append(
                    f"{addr[1]}: replica of {i.get('master_port')} "
                    f"link={i.get('master_link_status')} offset={i.get('slave_repl_offset')}"
                )
        try:
            with client(self.stack.info.sentinels[0], None) as s:
                reps: Any = s.sentinel_slaves(self.stack.info.master_name)
            seen = [f"{x['port']}:{x['flags']}" for x in reps]
        except Exception as e:
            seen = [type(e).__name__]
        return f"{', '.join(out)}; sentinel sees replicas {seen}"

    def pending_of(self, consumer: str) -> int | None:
        def count(r: redis.Redis) -> int:
            rows: Any = r.xpending_range(STREAM, GROUP, "-", "+", 1000, consumername=consumer)
            return len(rows)

        return self.read(count)


def exactly_once(counts: dict[str, int], ids: Iterable[str]) -> None:
    """Every id in ``ids`` was applied once, and no webhook at all was applied twice."""
    ids = list(ids)
    assert ids
    twice = {k: v for k, v in counts.items() if v != 1}
    assert not twice, f"applied more than once: {list(twice.items())[:5]}"
    missing = [i for i in ids if i not in counts]
    assert not missing, f"{len(missing)} acknowledged webhooks lost, e.g. {missing[:3]}"


def synced_replica(stack: Stack, node: tuple[str, int]) -> bool:
    """``node`` is a replica in sync, and the Sentinels list it as a healthy replica."""
    try:
        with client(node, stack.info.redis_password) as r:
            info = r.info("replication")
        if info.get("role") != "slave" or info.get("master_link_status") != "up":
            return False
        with client(stack.info.sentinels[0], None) as s:
            replicas = s.execute_command("SENTINEL", "REPLICAS", stack.info.master_name)
    except Exception:
        return False
    for rep in replicas:
        fields = dict(zip(rep[::2], rep[1::2], strict=False)) if isinstance(rep, list) else rep
        if (fields.get("ip"), int(fields.get("port", 0))) == node:
            return "s_down" not in fields.get("flags", "") and "disconnected" not in fields.get(
                "flags", ""
            )
    return False
