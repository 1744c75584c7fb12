"""Redactions stick (issue 14 §2), on the real stack: tombstones later writes respect, and
shop/redact erasing the shop's dead letters, archived records and reports via its index."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from shopipe import segment
from shopipe.segment import Record
from shopipe_worker import redaction

from tests.worker_kit import BODIES, Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest

OTHER = "bystander.myshopify.com"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


async def archived(kit: Kit) -> list[Record]:
    out: list[Record] = []
    for obj in await kit.store.list(segment.PROCESSED):
        out += segment.decode(await kit.store.get(obj.key))
    return out


def shop_of(rec: Record) -> str:
    return {k.lower(): v for k, v in rec.headers.items()}["x-shopify-shop-domain"]


def webhook_of(rec: Record) -> str:
    return {k.lower(): v for k, v in rec.headers.items()}["x-shopify-webhook-id"]


@pytest.mark.asyncio
async def test_a_shop_redaction_erases_its_objects_and_sticks(stack: Any):
    k = Kit(stack, SHOPIPE_ARCHIVE="true")
    await k.store.ensure_bucket()
    shop = "gone.myshopify.com"
    before = time.time() - 3600
    try:
        r = await k.master.get()
        async with k.running():
            # One segment mixing the shop with another, one with the shop alone.
            await k.produce(
                [
                    (headers("orders/create", "a1", shop=shop), body(id=1, updated_at=iso(before))),
                    (
                        headers("orders/create", "b1", shop=OTHER),
                        body(id=1, updated_at=iso(before)),
                    ),
                ]
            )
            await k.produce([(headers("products/create", "a2", shop=shop), body(id=2))])
            await k.produce([(headers("orders/create", "a3", shop=shop), b"not json")])
            request = body(
                shop_domain=shop, customer={"id": 3}, orders_requested=[1], data_request={"id": 4}
            )
            await k.produce([(headers("customers/data_request", "a4", shop=shop), request)])
            await wait_for(lambda: settled(k), what="shop seeded")
            assert await k.store.list(f"compliance/{shop}/")
            assert any(shop_of(rec) == shop and rec.body for rec in await archived(k))
            dead_before = await k.store.list(segment.DEAD_LETTER)
            assert len(dead_before) == 1

            redact = body(shop_id=1, shop_domain=shop)
            await k.produce([(headers("shop/redact", "a5", shop=shop), redact)])
            await wait_for(lambda: settled(k), what="redacted")

            assert [key async for key in r.scan_iter(match=f"{k.keys.prefix}:state:{shop}:*")] == []
            assert await r.exists(k.keys.redacted(shop))
            assert await k.store.list(f"compliance/{shop}/") == []
            assert await k.store.list(segment.DEAD_LETTER) == []
            # Archived records of the shop are gone or blank; the other shop's are intact.
            held = await archived(k)
            assert all(not rec.body for rec in held if shop_of(rec) == shop)
            assert [shop_of(rec) for rec in held if rec.body] == [OTHER]

            # Late deliveries of data older than the redaction: not written, not archived.
            await k.produce(
                [(headers("orders/updated", "a6", shop=shop), body(id=1, updated_at=iso(before)))]
            )
            await wait_for(lambda: settled(k), what="late delivery settled")
            assert not await r.exists(k.keys.state(shop, "orders", "1"))
            late = [rec for rec in await archived(k) if webhook_of(rec) == "a6"]
            assert len(late) == 1
            assert late[0].body == b""
            # One that fails is dead-lettered without a copy of its body.
            broken = body(updated_at=iso(before), email="late@example.com")  # no id
            await k.produce([(headers("orders/updated", "a9", shop=shop), broken)])
            await wait_for(lambda: settled(k), what="late failure settled")
            assert await k.store.list(segment.DEAD_LETTER) == []
            assert [key async for key in r.scan_iter(match=f"{k.keys.prefix}:dead:*")]

            # After a re-install, newer data is kept as usual.
            later = iso(time.time() + 5)
            await k.produce(
                [(headers("orders/updated", "a8", shop=shop), body(id=1, updated_at=later))]
            )
            await wait_for(lambda: settled(k), what="re-installed shop's update")
            assert await r.hget(k.keys.state(shop, "orders", "1"), "updated_at") == later.encode()
            assert await k.store.list(f"index/shops/{shop}/")  # its new archive is indexed
    finally:
        await k.close()


@BODIES
@pytest.mark.asyncio
async def test_a_customer_redaction_sticks(kit: Kit):
    shop = "demo.myshopify.com"
    old = iso(time.time() - 3600)
    r = await kit.master.get()
    st = kit.keys.state
    async with kit.running():
        await kit.produce(
            [
                (headers("customers/update", "c1"), body(id=3, updated_at=old, email="x@y")),
                (headers("orders/create", "c2"), body(id=30, updated_at=old, customer={"id": 3})),
                (headers("orders/create", "c3"), body(id=31, updated_at=old)),
            ]
        )
        await wait_for(lambda: settled(kit))
        redact = body(shop_domain=shop, customer={"id": 3}, orders_to_redact=[30])
        await kit.produce([(headers("customers/redact", "c4"), redact)])
        await wait_for(lambda: settled(kit))
        for key in (st(shop, "customers", "3"), st(shop, "orders", "30")):
            assert await r.hget(key, "body") is None
            assert await r.hget(key, "redacted") == b"1"
            assert await r.pttl(key) == -1  # kept for good
        assert await r.hget(st(shop, "orders", "31"), "body") is not None

        # Shopify's late (or a replayed) copy from before the redaction: not written.
        await kit.produce(
            [
                (headers("customers/update", "c5"), body(id=3, updated_at=old, email="x@y")),
                (headers("orders/updated", "c6"), body(id=30, updated_at=old)),
                (headers("orders/delete", "c7"), body(id=30)),
            ]
        )
        await wait_for(lambda: settled(kit))
        assert await r.hget(st(shop, "customers", "3"), "body") is None
        assert await r.hget(st(shop, "orders", "30"), "redacted") == b"1"
        assert await r.pttl(st(shop, "orders", "30")) == -1  # a delete did not make it expire

        # The customer comes back later: newer data is kept.
        later = iso(time.time() + 5)
        await kit.produce([(headers("customers/update", "c8"), body(id=3, updated_at=later))])
        await wait_for(lambda: settled(kit))
        assert await r.hget(st(shop, "customers", "3"), "body") is not None


@pytest.mark.asyncio
async def test_two_shops_redacted_at_once_both_leave_a_shared_archive(kit: Kit):
    name = segment.new_name()
    key = segment.processed_key(name)
    shops = ["a.myshopify.com", "b.myshopify.com", "c.myshopify.com"]
    records = [
        Record(
            segment.record_id(name, i),
            time.time(),
            headers("orders/create", f"w{i}", shop=s),
            b"{}",
        )
        for i, s in enumerate(shops * 3)
    ]
    for shop in shops[:2]:
        await redaction.note(kit.store, {shop}, key)
    await kit.store.put_segment(key, segment.encode(records))
    r = await kit.master.get()
    await asyncio.gather(*(redaction.erase_shop(kit.store, r, kit.keys, s) for s in shops[:2]))
    left = segment.decode(await kit.store.get(key))
    assert [shop_of(rec) for rec in left] == ["c.myshopify.com"] * 3
    for shop in shops[:2]:
        assert await kit.store.list(f"index/shops/{shop}/") == []
    # A segment that held only the redacted shop goes whole.
    only = segment.processed_key(segment.new_name())
    await redaction.note(kit.store, {"a.myshopify.com"}, only)
    await kit.store.put_segment(only, segment.encode(records[:1]))
    assert await redaction.erase_shop(kit.store, r, kit.keys, "a.myshopify.com") == 1
    assert not await kit.store.exists(only)
