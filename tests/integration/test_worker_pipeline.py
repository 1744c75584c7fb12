"""The worker against the real stack (Redis via Sentinel, SeaweedFS), run in-process.

Each test has its own stream, group, key prefix and bucket, so tests never see each other's
segments, and uses short timings (claim idle, backoff, sweep grace) to stay fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from shopipe.devstack import Stack
from shopipe.sentinel import MasterClient, RedisTarget
from shopipe.stream import Keys, announce
from shopipe_worker import dlq, streamops
from shopipe_worker.consumer import Consumer
from shopipe_worker.events import Event
from shopipe_worker.processor import Processor
from shopipe_worker.registry import Context, Registry, build
from shopipe_worker.sweeper import Sweeper

pytestmark = pytest.mark.integration

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
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@pytest_asyncio.fixture
async def kit(stack: Stack) -> AsyncIterator[Kit]:
    k = Kit(stack)
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


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.asyncio
async def test_duplicate_deliveries_are_applied_once(kit: Kit):
    t = "test/ping"
    async with kit.running():
        await kit.produce(
            [(headers(t, "wh-1", "ev-1"), body()), (headers(t, "wh-1", "ev-1"), body())]
        )
        # Shopify's retry (same webhook id) in a later segment, and a second subscription to
        # the same topic (another webhook id, same event id).
        await kit.produce([(headers(t, "wh-1", "ev-1"), body())])
        await kit.produce([(headers(t, "wh-2", "ev-1"), body())])
        # Same event id, another topic: different work.
        await kit.produce([(headers("test/other", "wh-3", "ev-1"), body())])
        await wait_for(lambda: settled(kit), what="all segments done")
    assert await kit.counts() == {"wh-1": 1, "wh-3": 1}


@pytest.mark.asyncio
async def test_a_replay_under_another_topic_does_not_shadow_the_genuine_delivery(kit: Kit):
    # Headers are unsigned: a captured body re-sent under another topic with the same webhook
    # id, and processed first, must not turn the genuine delivery into a "duplicate".
    async with kit.running():
        await kit.produce([(headers("test/other", "wh-9"), body())])
        await wait_for(lambda: settled(kit), what="the replay done")
        await kit.produce([(headers("test/ping", "wh-9"), body())])
        await wait_for(lambda: settled(kit), what="the genuine delivery done")
        await kit.produce([(headers("test/ping", "wh-9"), body())])  # Shopify's retry of it
        await wait_for(lambda: settled(kit), what="the retry settled")
    assert await kit.counts() == {"wh-9": 2}  # once under each topic, the retry skipped


@pytest.mark.asyncio
async def test_out_of_order_updates_keep_the_newest_and_deletes_stay_deleted(kit: Kit):
    newer = body(id=42, updated_at="2025-01-02T00:00:00Z", note="newer")
    older = body(id=42, updated_at="2025-01-01T12:00:00-05:00", note="older")
    state = kit.keys.state(SHOP, "orders", "42")
    r = await kit.master.get()
    async with kit.running():
        await kit.produce([(headers("orders/updated", "a"), newer)])
        await wait_for(lambda: settled(kit))
        await kit.produce([(headers("orders/updated", "b"), older)])
        await wait_for(lambda: settled(kit))
        assert json.loads(await hget(kit, state, "body"))["note"] == "newer"
        await kit.produce([(headers("orders/delete", "c"), body(id=42))])
        await wait_for(lambda: settled(kit))
        assert await hget(kit, state, "body") is None
        assert await hget(kit, state, "deleted") is not None
        assert await r.ttl(state) > 0  # the tombstone expires
        # An update that Shopify delivers after the delete must not bring the order back.
        await kit.produce([(headers("orders/updated", "d"), older)])
        await wait_for(lambda: settled(kit))
        assert await hget(kit, state, "body") is None


@pytest.mark.asyncio
async def test_a_failing_handler_is_retried_then_succeeds(kit: Kit):
    async with kit.running():
        key = await kit.produce(
            [(headers("test/ping", "flaky"), body(fail=2)), (headers("test/ping", "fine"), body())]
        )
        await wait_for(lambda: settled(kit), what="retried segment done")
    assert await kit.counts() == {"flaky": 1, "fine": 1}
    assert int(await hget(kit, kit.attempts_key, "flaky")) == 3
    # The good record was applied on the first delivery and not run again on the retries.
    assert int(await hget(kit, kit.attempts_key, "fine")) == 1
    assert not await kit.store.exists(key)


@pytest.mark.asyncio
async def test_a_permanent_failure_is_dead_lettered_then_replayed(kit: Kit):
    kit.env["SHOPIPE_MAX_ATTEMPTS"] = "3"
    async with kit.running():
        await kit.produce(
            [
                (headers("test/ping", "bad"), body(fail="always")),
                (headers("test/ping", "ok"), body()),
            ]
        )
        await wait_for(lambda: settled(kit), what="segment settled with a dead letter")
        dead = await dlq.list_dead(kit.store)
        assert [d.doc["webhook_id"] for d in dead] == ["bad"]
        doc = dead[0].doc
        assert doc["attempts"] == 3
        assert "RuntimeError: always fails on purpose" in doc["error"]
        assert doc["dead_lettered_at"] >= doc["received_at"]
        r = await kit.master.get()
        assert await r.exists(kit.keys.dead(dead[0].record_id))
        assert await kit.counts() == {"ok": 1}

        await r.set(kit.fixed_key, "1")
        seen: list[tuple[int, int]] = []
        new = await dlq.replay(
            kit.settings, kit.master, kit.store, dead, lambda d, t: seen.append((d, t))
        )
        assert seen[-1] == (1, 1)
        await wait_for(lambda: gone(kit, new[0]), what="replayed segment processed")
    assert await kit.counts() == {"ok": 1, "bad": 1}
    assert await dlq.list_dead(kit.store) == []


@pytest.mark.asyncio
async def test_a_permanent_error_is_dead_lettered_at_once(kit: Kit):
    async with kit.running():
        await kit.produce([(headers("test/ping", "notjson"), b"{not json")])
        await wait_for(lambda: settled(kit))
    dead = await dlq.list_dead(kit.store)
    assert [(d.doc["attempts"], d.doc["error"].split(":")[0]) for d in dead] == [(1, "BadPayload")]


@pytest.mark.asyncio
async def test_unparseable_and_missing_segments_are_acknowledged(kit: Kit):
    name = segment.new_name()
    bad = segment.incoming_key(name)
    await kit.store.put(bad, b"SHOPIPE-SEGMENT/1\n{broken")
    async with kit.running():
        await kit.announce(bad)
        await kit.announce(segment.incoming_key(segment.new_name()))  # never written
        await kit.announce("processed/elsewhere.seg")  # not ours to touch
        await wait_for(lambda: settled(kit))
    assert await kit.store.exists(segment.dead_segment_key(name))
    reason = json.loads(await kit.store.get(segment.dead_segment_key(name) + ".json"))
    assert reason["error"].startswith("SegmentError")
    assert await dlq.list_dead_segments(kit.store) == [segment.dead_segment_key(name)]


@pytest.mark.asyncio
async def test_the_sweeper_recovers_a_lost_announcement(kit: Kit):
    r = await kit.master.get()
    lost = await kit.put([(headers("test/ping", "lost-xadd"), body())])
    deleted = await kit.put([(headers("test/ping", "lost-entry"), body())])
    entry = await kit.announce(deleted)
    await r.xdel(kit.settings.stream, entry)
    async with kit.running(sweep=True):
        await wait_for(lambda: settled(kit), what="swept segments processed")
    assert await kit.counts() == {"lost-xadd": 1, "lost-entry": 1}
    assert not await kit.store.exists(lost)


@pytest.mark.asyncio
async def test_the_sweeper_leaves_segments_still_pending_alone(kit: Kit):
    """A segment waiting for its retry is pending: announcing it again would reset its
    attempt count and run it twice at once."""
    kit.env["SHOPIPE_RETRY_BASE_SECONDS"] = "3"
    kit.env["SHOPIPE_RETRY_MAX_SECONDS"] = "3"
    s = kit.with_settings()
    async with kit.running():
        key = await kit.produce([(headers("test/ping", "slow-retry"), body(fail=1))])
        r = await kit.master.get()
        await wait_for(lambda: _attempts(kit, "slow-retry", 1))
        await asyncio.sleep(0)  # let the failure be recorded
        sweeper = Sweeper(kit.with_settings(SHOPIPE_SWEEP_GRACE_SECONDS="0"), kit.master, kit.store)
        assert await sweeper.sweep_once() == 0
        assert await r.xlen(s.stream) == 1
        await wait_for(lambda: gone(kit, key), timeout=15)
    assert await kit.counts() == {"slow-retry": 1}


async def _attempts(kit: Kit, wid: str, n: int) -> bool:
    r = await kit.master.get()
    got = await r.hget(kit.attempts_key, wid)
    return got is not None and int(got) >= n


@pytest.mark.asyncio
async def test_a_crashed_consumers_entries_are_reclaimed_and_it_is_removed(kit: Kit):
    s = kit.settings
    r = await kit.master.get()
    key = await kit.produce([(headers("test/ping", "orphan"), body())])
    await r.xgroup_create(s.stream, s.consumer_group, id="0", mkstream=True)
    # A consumer takes the entry and dies without acknowledging it.
    taken = await streamops.read(r, s.stream, s.consumer_group, "ghost", 10, 10)
    assert [e.key for e in taken] == [key]
    async with kit.running():
        await wait_for(lambda: settled(kit), what="orphan reclaimed")

        async def ghost_removed() -> bool:
            names = [c["name"] for c in await r.xinfo_consumers(s.stream, s.consumer_group)]
            return b"ghost" not in names

        await wait_for(ghost_removed, what="idle consumer removed")
    assert await kit.counts() == {"orphan": 1}


@pytest.mark.asyncio
async def test_consumers_racing_on_one_segment_apply_it_once(kit: Kit):
    """Two announcements of one segment, read by two consumers at once."""
    records = [(headers("test/ping", f"race-{i}"), body(sleep=0.01)) for i in range(30)]
    key = await kit.put(records)
    await kit.announce(key)
    await kit.announce(key)
    async with kit.running("a"), kit.running("b"):
        await wait_for(lambda: settled(kit))
    assert await kit.counts() == {f"race-{i}": 1 for i in range(30)}


@pytest.mark.asyncio
async def test_stop_drains_in_flight_work(kit: Kit):
    records = [(headers("test/ping", f"drain-{i}"), body(sleep=0.05)) for i in range(10)]
    c = kit.consumer()
    task = asyncio.create_task(c.run())
    key = await kit.produce(records)
    await wait_for(lambda: _attempts(kit, "drain-0", 1), what="segment started")
    c.stop()
    await asyncio.wait_for(task, timeout=10)
    assert await kit.counts() == {f"drain-{i}": 1 for i in range(10)}
    assert not await kit.store.exists(key)
    assert await settled(kit)


@pytest.mark.asyncio
async def test_a_group_lost_in_a_failover_is_created_again(kit: Kit):
    async with kit.running():
        await kit.produce([(headers("test/ping", "before"), body())])
        await wait_for(lambda: settled(kit))
        r = await kit.master.get()
        await r.delete(kit.settings.stream)  # what a promoted replica without it looks like
        await kit.produce([(headers("test/ping", "after"), body())])
        await wait_for(lambda: settled(kit), what="group recreated")
    assert await kit.counts() == {"before": 1, "after": 1}


@pytest.mark.asyncio
async def test_compliance_topics_remove_exactly_the_right_keys(kit: Kit):
    other = "other.myshopify.com"
    when = "2025-01-01T00:00:00Z"
    seed = [
        (headers("customers/create", "c1", shop=SHOP), body(id=1, updated_at=when, email="a@x")),
        (headers("customers/create", "c2", shop=SHOP), body(id=2, updated_at=when)),
        (
            headers("orders/create", "o10", shop=SHOP),
            body(id=10, updated_at=when, customer={"id": 1}),
        ),
        (
            headers("orders/create", "o11", shop=SHOP),
            body(id=11, updated_at=when, customer={"id": 1}),
        ),
        (headers("orders/create", "o12", shop=SHOP), body(id=12, updated_at=when)),
        (headers("products/create", "p1", shop=SHOP), body(id=5, updated_at=when)),
        (headers("customers/create", "x1", shop=other), body(id=1, updated_at=when)),
        (headers("orders/create", "x10", shop=other), body(id=10, updated_at=when)),
    ]
    r = await kit.master.get()

    async def held() -> set[str]:
        return (
            {k.decode() async for k in r.scan_iter(match=f"{kit.keys.prefix}:*")}
            - {kit.settings.stream}
            - {k.decode() async for k in r.scan_iter(match=f"{kit.keys.prefix}:done:*")}
        )

    st = kit.keys.state
    async with kit.running():
        await kit.produce(seed)
        await wait_for(lambda: settled(kit))
        assert await held() == {
            st(SHOP, "customers", "1"),
            st(SHOP, "customers", "2"),
            st(SHOP, "orders", "10"),
            st(SHOP, "orders", "11"),
            st(SHOP, "orders", "12"),
            st(SHOP, "products", "5"),
            st(other, "customers", "1"),
            st(other, "orders", "10"),
        }
        request = body(
            shop_domain=SHOP, customer={"id": 1}, orders_requested=[10, 11], data_request={"id": 77}
        )
        await kit.produce([(headers("customers/data_request", "dr", shop=SHOP), request)])
        await wait_for(lambda: settled(kit))
        report = json.loads(await kit.store.get(f"compliance/{SHOP}/data-request-77.json"))
        assert report["customer"]["email"] == "a@x"
        assert sorted(report["orders"]) == ["10", "11"]

        redact = body(shop_domain=SHOP, customer={"id": 1}, orders_to_redact=[10, 11])
        await kit.produce([(headers("customers/redact", "cr", shop=SHOP), redact)])
        await wait_for(lambda: settled(kit))
        assert await held() == {
            st(SHOP, "customers", "2"),
            st(SHOP, "orders", "12"),
            st(SHOP, "products", "5"),
            st(other, "customers", "1"),
            st(other, "orders", "10"),
        }

        await kit.produce([(headers("app/uninstalled", "un", shop=SHOP), body(id=1))])
        await wait_for(lambda: settled(kit))
        assert await r.hget(kit.keys.shop(SHOP), "uninstalled_at") == when.encode()

        await kit.produce([(headers("shop/redact", "sr", shop=SHOP), body(shop_domain=SHOP))])
        await wait_for(lambda: settled(kit))
        assert await held() == {st(other, "customers", "1"), st(other, "orders", "10")}
        assert await kit.store.list(f"compliance/{SHOP}/") == []
