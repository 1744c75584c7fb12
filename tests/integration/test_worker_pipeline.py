"""The worker against the real stack (Redis via Sentinel, SeaweedFS), run in-process.

Each test has its own stream, group, key prefix and bucket, so tests never see each other's
segments, and uses short timings (claim idle, backoff, sweep grace) to stay fast.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from shopipe import segment
from shopipe_worker import dlq, streamops
from shopipe_worker.sweeper import Sweeper

from tests.worker_kit import BODIES, SHOP, Kit, gone, headers, hget, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest


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
async def test_state_copies_hold_no_body_unless_asked_and_expire(kit: Kit):
    state = kit.keys.state(SHOP, "orders", "42")
    r = await kit.master.get()
    async with kit.running():
        await kit.produce([(headers("orders/updated", "a"), body(id=42, updated_at="2025-01-02"))])
        await wait_for(lambda: settled(kit))
    assert await hget(kit, state, "updated_at") == b"2025-01-02"
    assert await hget(kit, state, "body") is None
    assert 0 < await r.ttl(state) <= kit.settings.state_ttl_seconds == 24 * 3600


@BODIES
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
        # Bounded even with its body: it expires after SHOPIPE_STATE_TTL_SECONDS.
        assert 0 < await r.ttl(state) <= kit.settings.state_ttl_seconds
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
        assert [d.doc.webhook_id for d in dead] == ["bad"]
        doc = dead[0].doc
        assert doc.attempts == 3
        assert "RuntimeError: always fails on purpose" in doc.error
        assert doc.dead_lettered_at >= doc.received_at
        r = await kit.master.get()
        assert await r.exists(kit.keys.dead(dead[0].record_id))
        assert await kit.counts() == {"ok": 1}

        await r.set(kit.fixed_key, "1")
        seen: list[tuple[int, int]] = []
        new = await dlq.replay(
            kit.settings, kit.master, kit.store, dead, lambda d, t: seen.append((d, t))
        )
        assert seen[-1] == (1, 1)
        await wait_for(lambda: gone(kit, new.segments[0]), what="replayed segment processed")
    assert await kit.counts() == {"ok": 1, "bad": 1}
    assert await dlq.list_dead(kit.store) == []


@pytest.mark.asyncio
async def test_a_permanent_error_is_dead_lettered_at_once(kit: Kit):
    async with kit.running():
        await kit.produce([(headers("test/ping", "notjson"), b"{not json")])
        await wait_for(lambda: settled(kit))
    dead = await dlq.list_dead(kit.store)
    assert [(d.doc.attempts, d.doc.error.split(":")[0]) for d in dead] == [(1, "BadPayload")]


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


@BODIES  # customers/data_request reports the copies' bodies
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
            - {k.decode() async for k in r.scan_iter(match=f"{kit.keys.prefix}:fence:*")}
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
        # The redacted copies stay as tombstones without a body (test_worker_redaction.py).
        redacted = {st(SHOP, "customers", "1"), st(SHOP, "orders", "10"), st(SHOP, "orders", "11")}
        assert await held() == {
            *redacted,
            st(SHOP, "customers", "2"),
            st(SHOP, "orders", "12"),
            st(SHOP, "products", "5"),
            st(other, "customers", "1"),
            st(other, "orders", "10"),
        }
        for key in redacted:
            assert await r.hget(key, "body") is None

        uninstall = body(id=1, myshopify_domain=SHOP, updated_at=when)
        await kit.produce([(headers("app/uninstalled", "un", shop=SHOP), uninstall)])
        await wait_for(lambda: settled(kit))
        assert await r.hget(kit.keys.shop(SHOP), "uninstalled_at") is not None
        assert await r.hget(kit.keys.shop(SHOP), "shop_id") == b"1"

        await kit.produce([(headers("shop/redact", "sr", shop=SHOP), body(shop_domain=SHOP))])
        await wait_for(lambda: settled(kit))
        assert await held() == {
            st(other, "customers", "1"),
            st(other, "orders", "10"),
            kit.keys.redacted(SHOP),
        }
        assert await kit.store.list(f"compliance/{SHOP}/") == []
