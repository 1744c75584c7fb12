"""Shopify's mandatory compliance topics, applied to what shopipe holds.

Each acts only when its signed body names the header's shop (``handlers.binding``; and the
shop id, when shopipe knows it from an ``app/uninstalled``): else ``HeaderBodyMismatch``.

- ``customers/redact``: the customer's state copy and the copies of the orders Shopify lists
  in ``orders_to_redact`` become redaction tombstones (no body, kept for good), so no copy at
  or below the redaction's version is written again.
- ``shop/redact``: every state copy of the shop and its flags hash go, the shop's redaction
  tombstone ``<prefix>:redacted:<shop>`` is set (later writes for the shop at or below its
  version are refused), and its bucket objects are erased (``shopipe_worker.redaction``).
- ``customers/data_request``: a report of what shopipe holds on the customer (their copy and the
  requested orders) written to ``compliance/<shop>/data-request-<id>.json``; a fixed key, so a
  second run rewrites the same object. Not written for a request older than the shop's
  redaction.
- ``app/uninstalled``: ``uninstalled_at`` and ``shop_id`` on the shop's flags hash, unless the
  shop was redacted after the body's ``updated_at``.

A redaction's version is the record's own time (``state.record_version``). Redis writes are
queued on the record's transaction (``shop/redact`` also raises its tombstone at once, before it
looks for the shop's keys); the bucket writes are idempotent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shopipe.errors import PermanentError
from shopipe.stream import as_str

from shopipe_worker import redaction
from shopipe_worker.events import BadPayload, Event
from shopipe_worker.handlers import resource_id, shop_of
from shopipe_worker.handlers.binding import HeaderBodyMismatch, check
from shopipe_worker.handlers.state import record_version, version_of
from shopipe_worker.registry import Context, Registry

_SCAN_COUNT = 500

# KEYS: state keys to tombstone; ARGV: version, topic. The highest version seen is kept.
REDACT = """
for _, key in ipairs(KEYS) do
  local cur = redis.call('HGET', key, 'version')
  local version = ARGV[1]
  if cur and tonumber(cur) > tonumber(version) then version = cur end
  redis.call('DEL', key)
  redis.call('HSET', key, 'version', version, 'topic', ARGV[2], 'redacted', '1')
end
return #KEYS
"""

# KEYS[1] a redaction tombstone; ARGV[1] version: raise it, never lower it.
RAISE = """
local cur = redis.call('GET', KEYS[1])
if not cur or tonumber(cur) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS[1] shop hash, KEYS[2] shop redaction; ARGV: version, uninstalled_at text, shop id.
UNINSTALL = """
local redacted = redis.call('GET', KEYS[2])
if redacted and tonumber(redacted) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'uninstalled_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'shop_id', ARGV[3]) end
return 1
"""


async def bound_shop(event: Event, ctx: Context) -> str:
    """The header's shop, once the body is shown to name it (domain, and id when known)."""
    shop = shop_of(event)
    body_id = check(event)
    raw: bytes | str | None = await ctx.redis.hget(ctx.keys.shop(shop), "shop_id")
    known = None if raw is None else as_str(raw)
    if known is not None and body_id is not None and known != body_id:
        raise HeaderBodyMismatch(f"{event.topic} body names another shop id than is known")
    return shop


async def _redacted_since(ctx: Context, shop: str) -> int | None:
    raw: bytes | str | None = await ctx.redis.get(ctx.keys.redacted(shop))
    return None if raw is None else int(raw)


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
    shop = await bound_shop(event, ctx)
    payload = event.json_object()
    version, _ = record_version(event)
    since = await _redacted_since(ctx, shop)
    keys = [ctx.keys.state(shop, "customers", _customer_id(payload))]
    keys += [ctx.keys.state(shop, "orders", o) for o in _order_ids(payload, "orders_to_redact")]
    if since is not None and since >= version:
        ctx.tx.delete(*keys)  # the shop's own tombstone already covers them
        return
    ctx.tx.eval(REDACT, len(keys), *keys, str(version), event.topic)


async def redact_shop(event: Event, ctx: Context) -> None:
    shop = await bound_shop(event, ctx)
    version, _ = record_version(event)
    # The tombstone goes up first, outside the transaction (raising it is idempotent): a copy
    # written before it is seen by the SCAN below, one written after it is refused. Queued on
    # the transaction as well, so it is applied with the markers whatever happens to this one.
    await ctx.redis.eval(RAISE, 1, ctx.keys.redacted(shop), str(version))
    # The shop domain was checked against a strict pattern: it holds no glob character.
    pattern = ctx.keys.state(shop, "*", "*")
    found = [key async for key in ctx.redis.scan_iter(match=pattern, count=_SCAN_COUNT)]
    ctx.tx.delete(ctx.keys.shop(shop), *found)
    ctx.tx.eval(RAISE, 1, ctx.keys.redacted(shop), str(version))
    if ctx.store is not None:
        await redaction.erase_shop(ctx.store, ctx.redis, ctx.keys, shop)


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
    shop = await bound_shop(event, ctx)
    payload = event.json_object()
    since = await _redacted_since(ctx, shop)
    if since is not None and since >= record_version(event)[0]:
        return  # asked before the shop's data was erased: there is nothing left to report
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
    key = f"{redaction.COMPLIANCE}{shop}/data-request-{request_id}.json"
    await ctx.store.put_json(key, report)


async def uninstalled(event: Event, ctx: Context) -> None:
    shop = await bound_shop(event, ctx)
    payload = event.json_object()
    version, _ = version_of(event, payload)
    shop_id = check(event) or ""
    at = record_version(event)[1] or time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.received_at)
    )
    keys = (ctx.keys.shop(shop), ctx.keys.redacted(shop))
    ctx.tx.eval(UNINSTALL, 2, *keys, str(version), at, shop_id)


def register(registry: Registry) -> None:
    registry.add("customers/redact", redact_customer, name="compliance")
    registry.add("shop/redact", redact_shop, name="compliance")
    registry.add("customers/data_request", data_request, name="compliance")
    registry.add("app/uninstalled", uninstalled, name="compliance")
