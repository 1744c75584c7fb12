"""The worker's test kit: its own stream, group, key prefix and bucket per test, on the shared
stack (Redis via Sentinel, SeaweedFS), with short timings and a counting handler."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis.exceptions import ResponseError
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings, load_settings
from shopipe.sentinel import MasterClient, RedisTarget
from shopipe.stream import Keys, announce
from shopipe_devstack import Stack
from shopipe_worker.consumer import Consumer
from shopipe_worker.events import Event
from shopipe_worker.processor import Processor
from shopipe_worker.registry import Context, Registry, build
from shopipe_worker.sweeper import Sweeper

SHOP = "demo.myshopify.com"
FAST = {
    "SHOPIPE_BLOCK_SECONDS": "0.2",
    "SHOPIPE_CLAIM_IDLE_SECONDS": "1",
    "SHOPIPE_RETRY_BASE_SECONDS": "0.1",
    "SHOPIPE_RETRY_MAX_SECONDS": "0.4",
    "SHOPIPE_SWEEP_INTERVAL_SECONDS": "0.3",
    "SHOPIPE_SWEEP_GRACE_SECONDS": "1",
    "SHOPIPE_CONSUMER_IDLE_SECONDS": "1",
    "SHOPIPE_DRAIN_SECONDS": "5",
    "SHOPIPE_LOG_LEVEL": "warning",
}


def headers(topic: str, webhook_id: str, event_id: str = "", shop: str = SHOP) -> dict[str, str]:
    h = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Triggered-At": "2025-01-01T00:00:00Z",
    }
    if event_id:
        h["X-Shopify-Event-Id"] = event_id
    return h


class Kit:
    def __init__(self, stack: Stack, **overrides: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.stack = stack
        env = {
            **stack.info.service_env(),
            **FAST,
            "SHOPIPE_KEY_PREFIX": f"t{tag}",
            "SHOPIPE_STREAM": f"t{tag}:webhooks",
            "SHOPIPE_CONSUMER_GROUP": f"t{tag}-workers",
            "SHOPIPE_S3_BUCKET": f"wk-{tag}",
            "SHOPIPE_POD_NAME": "kit",
            **overrides,
        }
        self.env = env
        self.settings = load_settings(WorkerSettings, env)
        self.master = MasterClient(RedisTarget.from_settings(self.settings), service="t", pod=tag)
        self.store = Buffer(self.settings)
        self.keys = Keys(self.settings.key_prefix)
        self.count_key = f"{self.keys.prefix}:test:count"
        self.attempts_key = f"{self.keys.prefix}:test:attempts"
        self.fixed_key = f"{self.keys.prefix}:test:fixed"

    def with_settings(self, **overrides: str) -> WorkerSettings:
        return load_settings(WorkerSettings, {**self.env, **overrides})

    async def close(self) -> None:
        await self.master.close()
        self.store.close()

    async def put(
        self, records: list[tuple[dict[str, str], bytes]], at: float | None = None
    ) -> str:
        name = segment.new_name(at)
        recs = [
            segment.Record(segment.record_id(name, i), time.time(), h, body)
            for i, (h, body) in enumerate(records)
        ]
        key = segment.incoming_key(name)
        await self.store.put_segment(key, segment.encode(recs))
        return key

    async def announce(self, key: str, n: int = 1) -> str:
        r = await self.master.get()
        return await announce(r, self.settings.stream, key, n, self.settings.stream_maxlen)

    async def produce(self, records: list[tuple[dict[str, str], bytes]]) -> str:
        key = await self.put(records)
        await self.announce(key, len(records))
        return key

    async def counts(self) -> dict[str, int]:
        r = await self.master.get()
        raw: dict[Any, Any] = await r.hgetall(self.count_key)
        return {k.decode(): int(v) for k, v in raw.items()}

    def registry(self) -> Registry:
        """Built-ins, plus a counting handler and a failing one for ``test/*`` topics."""
        reg = build(["state", "compliance"], [])
        kit = self

        async def flaky(ev: Event, ctx: Context) -> None:
            fail = ev.json_object().get("fail", 0)
            n = await ctx.redis.hincrby(kit.attempts_key, ev.webhook_id, 1)
            if fail == "always" and not await ctx.redis.exists(kit.fixed_key):
                raise RuntimeError("always fails on purpose")
            if isinstance(fail, int) and n <= fail:
                raise RuntimeError("fails on purpose")
            delay = ev.json_object().get("sleep", 0)
            if delay:
                await asyncio.sleep(delay)

        async def count(ev: Event, ctx: Context) -> None:
            ctx.tx.hincrby(kit.count_key, ev.webhook_id, 1)

        reg.add("test/*", flaky)
        reg.add("test/*", count)
        return reg

    def consumer(self, pod: str = "w1", settings: WorkerSettings | None = None) -> Consumer:
        s = settings or self.with_settings(SHOPIPE_POD_NAME=pod)
        return Consumer(s, self.master, Processor(s, self.master, self.store, self.registry()))

    @contextlib.asynccontextmanager
    async def running(self, pod: str = "w1", sweep: bool = False) -> AsyncIterator[Consumer]:
        c = self.consumer(pod)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run())]
        if sweep:
            tasks.append(
                asyncio.create_task(Sweeper(c.settings, self.master, self.store).run(stop))
            )
        try:
            yield c
        finally:
            c.stop()
            stop.set()
            await stopped(tasks, 30.0)


async def stopped(tasks: list[asyncio.Task[Any]], seconds: float) -> None:
    """Wait for stopping workers' ``tasks`` to end; past ``seconds``, fail with where each one
    still is (a stop that hangs is a finding: its stack says where)."""
    _, late = await asyncio.wait(tasks, timeout=seconds)
    if late:
        where = []
        for t in late:
            out = io.StringIO()
            t.print_stack(file=out)
            where.append(out.getvalue())
            t.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        pytest.fail(f"workers still running {seconds:g} s after stop:\n" + "\n".join(where))
    for t in tasks:
        t.result()  # a worker that failed fails the test


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


# State copies keep their bodies only when asked: tests that read bodies ask.
BODIES = pytest.mark.parametrize("kit", [{"SHOPIPE_STATE_BODIES": "true"}], indirect=True)


@pytest_asyncio.fixture
async def kit(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    """Settings overrides come from indirect parametrization:
    ``@pytest.mark.parametrize("kit", [{"SHOPIPE_X": "v"}], indirect=True)``."""
    k = Kit(stack, **getattr(request, "param", {}))
    await k.store.ensure_bucket()
    try:
        yield k
    finally:
        await k.close()


async def gone(kit: Kit, key: str) -> bool:
    return not await kit.store.exists(key)


async def settled(kit: Kit) -> bool:
    """Every announcement acknowledged and nothing left under incoming/."""
    r = await kit.master.get()
    try:
        pending = await r.xpending(kit.settings.stream, kit.settings.consumer_group)
    except ResponseError:
        return False  # no group yet
    left = await kit.store.list(segment.INCOMING)
    return int(pending["pending"]) == 0 and not left


async def hget(kit: Kit, key: str, field: str) -> Any:
    r = await kit.master.get()
    return await r.hget(key, field)
