"""Shopify's mandatory compliance topics, applied to what shopipe holds.

- ``customers/redact``: the customer's state copy and the copies of the orders Shopify lists
  in ``orders_to_redact``.
- ``shop/redact``: every state copy of the shop, its flags hash and its data-request reports.
- ``customers/data_request``: a report of what shopipe holds on the customer (their copy and the
  requested orders) written to ``compliance/<shop>/data-request-<id>.json``; a fixed key, so a
  second run rewrites the same object.
- ``app/uninstalled``: ``uninstalled_at`` on the shop's flags hash.

Redis deletions are queued on the record's transaction; the bucket writes are idempotent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shopipe.errors import PermanentError

from shopipe_worker.events import BadPayload, Event
from shopipe_worker.handlers import resource_id, shop_of
from shopipe_worker.registry import Context, Registry

COMPLIANCE_PREFIX = "compliance/"
_SCAN_COUNT = 500


def _customer_id(payload: dict[str, Any]) -> str:
    customer = payload.get("customer")
    if not isinstance(customer, dict):
        raise BadPayload("payload has no customer")
    return resource_id(customer.get("id"), "customer id")


def _order_ids(payload: dict[str, Any], field: str) -> list[str]:
    ids = payload.get(field) or []
    if not isinstance(ids, list):
        raise BadPayload(f"payload {field} is not a list")
    return [resource_id(i, "order id") for i in ids]


async def redact_customer(event: Event, ctx: Context) -> None:
    payload = event.json_object()
    shop = shop_of(event)
    keys = [ctx.keys.state(shop, "customers", _customer_id(payload))]
    keys += [ctx.keys.state(shop, "orders", o) for o in _order_ids(payload, "orders_to_redact")]
    ctx.tx.delete(*keys)


async def redact_shop(event: Event, ctx: Context) -> None:
    shop = shop_of(event)
    # The shop domain was checked against a strict pattern: it holds no glob character.
    pattern = ctx.keys.state(shop, "*", "*")
    found = [key async for key in ctx.redis.scan_iter(match=pattern, count=_SCAN_COUNT)]
    ctx.tx.delete(ctx.keys.shop(shop), *found)
    if ctx.store is not None:
        for obj in await ctx.store.list(f"{COMPLIANCE_PREFIX}{shop}/"):
            await ctx.store.delete(obj.key)


async def _held(ctx: Context, key: str) -> Any:
    """The stored copy's parsed body, None when shopipe holds none."""
    raw: bytes | str | None = await ctx.redis.hget(key, "body")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def data_request(event: Event, ctx: Context) -> None:
    if ctx.store is None:
        raise PermanentError("customers/data_request needs the bucket")
    payload = event.json_object()
    shop = shop_of(event)
    customer = _customer_id(payload)
    request = payload.get("data_request")
    request_id = resource_id(
        request.get("id") if isinstance(request, dict) else event.webhook_id, "data request id"
    )
    orders = _order_ids(payload, "orders_requested")
    report: dict[str, Any] = {
        "shop": shop,
        "customer_id": customer,
        "data_request_id": request_id,
        "generated_at": time.time(),
        "customer": await _held(ctx, ctx.keys.state(shop, "customers", customer)),
        "orders": {o: await _held(ctx, ctx.keys.state(shop, "orders", o)) for o in orders},
    }
    await ctx.store.put_json(f"{COMPLIANCE_PREFIX}{shop}/data-request-{request_id}.json", report)


async def uninstalled(event: Event, ctx: Context) -> None:
    shop = shop_of(event)
    at = event.triggered_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.received_at))
    ctx.tx.hset(ctx.keys.shop(shop), "uninstalled_at", at)


def register(registry: Registry) -> None:
    registry.add("customers/redact", redact_customer, name="compliance")
    registry.add("shop/redact", redact_shop, name="compliance")
    registry.add("customers/data_request", data_request, name="compliance")
    registry.add("app/uninstalled", uninstalled, name="compliance")
