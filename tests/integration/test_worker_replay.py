"""Replayed signed bodies under forged headers (issue 14 §1) on the real stack: receiver,
Redis via Sentinel, SeaweedFS, the worker in-process. Redactions: test_worker_redaction.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from shopipe import segment
from shopipe.metrics import REGISTRY
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import running
from shopipe_worker.consumer import Consumer
from shopipe_worker.events import Event
from shopipe_worker.processor import Processor
from shopipe_worker.registry import Context, build

from tests.receiver_kit import receiver_settings
from tests.worker_kit import BODIES, Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest

SAMPLES = Path(__file__).resolve().parents[2] / "services" / "core" / "shopipe" / "samples"
VICTIM = "victim.myshopify.com"
OTHER = "bystander.myshopify.com"
SECRET = "replay-test-secret"
DESTRUCTIVE = (
    "shop/redact",
    "customers/redact",
    "customers/data_request",
    "app/uninstalled",
    "orders/delete",
    "draft_orders/delete",
    "products/delete",
    "collections/delete",
    "customers/delete",
    "inventory_items/delete",
    "locations/delete",
    "inventory_levels/disconnect",
)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def mismatches(topic: str) -> float:
    value = REGISTRY.get_sample_value("shopipe_worker_header_body_mismatch_total", {"topic": topic})
    return value or 0.0


async def redis_dump(kit: Kit, shop: str) -> dict[str, tuple[bytes, bool]]:
    """Every Redis key of ``shop``, serialised byte for byte (DUMP), and whether it expires."""
    r = await kit.master.get()
    out: dict[str, tuple[bytes, bool]] = {}
    async for raw in r.scan_iter(match=f"{kit.keys.prefix}:*{shop}*", count=500):
        key = raw.decode()
        dumped = await r.dump(key)
        assert dumped is not None
        out[key] = (dumped, await r.pttl(key) > 0)
    return out


async def bucket_dump(kit: Kit) -> dict[str, bytes]:
    return {o.key: await kit.store.get(o.key) for o in await kit.store.list("")}


async def seed_victim(kit: Kit) -> None:
    """The victim shop holds copies under the very ids the samples name, a known shop id,
    a data-request report, a dead letter and archived segments."""
    orders = json.loads((SAMPLES / "orders_create.json").read_bytes())
    product = json.loads((SAMPLES / "products_update.json").read_bytes())
    uninstall = json.loads((SAMPLES / "app_uninstalled.json").read_bytes())
    uninstall.update(id=99, myshopify_domain=VICTIM, domain=VICTIM)
    when = "2025-11-01T00:00:00Z"
    seed = [
        (headers("orders/create", "v1", shop=VICTIM), json.dumps(orders).encode()),
        (
            headers("orders/create", "v2", shop=VICTIM),
            body(id=5901234567891, updated_at=when, customer={"id": 7301234567890}),
        ),
        (headers("products/update", "v3", shop=VICTIM), json.dumps(product).encode()),
        (
            headers("customers/update", "v4", shop=VICTIM),
            body(id=7301234567890, updated_at=when, email="victim@example.com"),
        ),
        (headers("draft_orders/create", "v5", shop=VICTIM), body(id=70123456, updated_at=when)),
        (
            headers("inventory_levels/update", "v6", shop=VICTIM),
            body(inventory_item_id=46123456789000, location_id=1, available=3, updated_at=when),
        ),
        (headers("app/uninstalled", "v7", shop=VICTIM), json.dumps(uninstall).encode()),
        (headers("orders/create", "v8", shop=VICTIM), b"not json"),  # a dead letter
        (headers("orders/create", "o1", shop=OTHER), json.dumps(orders).encode()),
    ]
    request = body(
        shop_id=99,
        shop_domain=VICTIM,
        customer={"id": 7301234567890},
        orders_requested=[5901234567890],
        data_request={"id": 1},
    )
    async with kit.running():
        await kit.produce(seed)
        await wait_for(lambda: settled(kit), what="victim seeded")
        await kit.produce([(headers("customers/data_request", "v9", shop=VICTIM), request)])
        await wait_for(lambda: settled(kit), what="victim's report written")


@pytest.mark.asyncio
async def test_no_sample_body_under_any_destructive_topic_touches_another_shop(stack: Any):
    k = Kit(stack, SHOPIPE_ARCHIVE="true")
    await k.store.ensure_bucket()
    try:
        await seed_victim(k)
        assert await k.store.list(f"compliance/{VICTIM}/")
        assert await k.store.list(f"index/shops/{VICTIM}/dead-letter/")
        redis_before = await redis_dump(k, VICTIM)
        bucket_before = await bucket_dump(k)
        assert any(":state:" in key for key in redis_before)
        counted = {t: mismatches(t) for t in DESTRUCTIVE}

        samples = sorted(SAMPLES.glob("*.json"))
        settings = receiver_settings(
            stack,
            SECRET,
            SHOPIPE_S3_BUCKET=k.settings.s3_bucket,
            SHOPIPE_STREAM=k.settings.stream,
            SHOPIPE_KEY_PREFIX=k.settings.key_prefix,
        )
        sent = 0
        async with running(settings) as rx, httpx.AsyncClient() as client:
            for path in samples:
                raw = path.read_bytes()  # the exact signed bytes of a genuine delivery
                for topic in DESTRUCTIVE:
                    h = signed_headers(topic, raw, SECRET, shop=VICTIM)
                    resp = await client.post(rx.url, content=raw, headers=h)
                    assert resp.status_code == 200, (path.name, topic, resp.text)
                    sent += 1
        async with k.running():
            await wait_for(lambda: settled(k), timeout=60, what="every replay settled")

        # Byte for byte: no key of the victim changed, appeared or went.
        assert await redis_dump(k, VICTIM) == redis_before
        bucket_after = await bucket_dump(k)
        for key, data in bucket_before.items():
            assert bucket_after.get(key) == data, key
        # What is new: each replay's dead letter (and its index entry), and the archived
        # segments that carried the replays. Nothing else.
        new = {key: data for key, data in bucket_after.items() if key not in bucket_before}
        docs = [
            json.loads(data)
            for key, data in new.items()
            if key.startswith(segment.DEAD_LETTER) and key.endswith(".json")
        ]
        assert len(docs) == sent
        assert {d["reason"] for d in docs} == {"header_body_mismatch"}
        assert {d["shop"] for d in docs} == {VICTIM}
        assert all(
            key.startswith((segment.DEAD_LETTER, segment.PROCESSED, f"index/shops/{VICTIM}/"))
            for key in new
        )
        for topic in DESTRUCTIVE:
            assert mismatches(topic) - counted[topic] == len(samples), topic
    finally:
        await k.close()


@pytest.mark.asyncio
async def test_a_forged_delete_reaches_no_user_handler_either(kit: Kit):
    reg = build(["state", "compliance"], [])
    touched = f"{kit.keys.prefix}:test:touched"

    async def on_delete(ev: Event, ctx: Context) -> None:
        ctx.tx.incr(touched)

    reg.add("*/delete", on_delete)
    s = kit.with_settings(SHOPIPE_POD_NAME="w-user")
    consumer = Consumer(s, kit.master, Processor(s, kit.master, kit.store, reg))
    whole = (SAMPLES / "orders_updated.json").read_bytes()
    await kit.produce([(headers("orders/delete", "f1"), whole)])
    await kit.produce([(headers("orders/delete", "g1"), body(id=5))])  # a genuine deletion
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(lambda: settled(kit), what="both settled")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=30)
    r = await kit.master.get()
    assert await r.get(touched) == b"1"  # the genuine one only
    dead = [o.key for o in await kit.store.list(segment.DEAD_LETTER)]
    assert len(dead) == 1
    assert json.loads(await kit.store.get(dead[0]))["webhook_id"] == "f1"


@BODIES
@pytest.mark.asyncio
async def test_a_far_future_unsigned_time_does_not_freeze_a_copy(kit: Kit):
    state = kit.keys.state("demo.myshopify.com", "refunds", "7")
    forged = headers("refunds/create", "r1")
    forged["X-Shopify-Triggered-At"] = "2999-01-01T00:00:00Z"
    r = await kit.master.get()
    async with kit.running():
        await kit.produce([(forged, body(id=7, note="first"))])  # refunds carry no updated_at
        await wait_for(lambda: settled(kit))
        await kit.produce([(headers("refunds/create", "r2"), body(id=7, note="second"))])
        await wait_for(lambda: settled(kit))
    held = await r.hget(state, "body")
    assert held is not None
    assert json.loads(held)["note"] == "second"


@BODIES
@pytest.mark.asyncio
async def test_a_known_shop_id_must_match_too(kit: Kit):
    shop = "demo.myshopify.com"
    st = kit.keys.state(shop, "customers", "3")
    r = await kit.master.get()
    async with kit.running():
        uninstall = body(id=11, myshopify_domain=shop, updated_at=iso(time.time() - 60))
        await kit.produce(
            [
                (headers("app/uninstalled", "k1"), uninstall),
                (headers("customers/update", "k2"), body(id=3, updated_at=iso(time.time()))),
            ]
        )
        await wait_for(lambda: settled(kit))
        assert await r.hget(kit.keys.shop(shop), "shop_id") == b"11"
        forged = body(shop_id=12, shop_domain=shop, customer={"id": 3}, orders_to_redact=[])
        await kit.produce([(headers("customers/redact", "k3"), forged)])
        await wait_for(lambda: settled(kit))
    assert await r.hget(st, "body") is not None
    (doc,) = [json.loads(await kit.store.get(o.key)) for o in await kit.store.list("dead-letter/")]
    assert doc["reason"] == "header_body_mismatch"
