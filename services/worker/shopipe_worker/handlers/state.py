"""The latest copy of each resource in Redis: ``<prefix>:state:<shop>:<kind>:<id>`` (a hash of
``updated_at``, ``version``, ``topic``, ``body``).

Shopify delivers out of order, so a copy is written only when its version (the payload's
``updated_at``, else the triggered-at header, else the receive time) is newer than the stored
one. The compare and the write are one Lua script queued on the record's transaction: a
concurrent older update can neither slip in between nor apply without the done-markers.
``*/delete`` (and ``inventory_levels/disconnect``) replace the copy with a tombstone (its
version, ``deleted`` and no body) that expires after a week: without it, an update delivered
after the delete would bring the resource back.

A copy keeps the body only when asked (``SHOPIPE_STATE_BODIES``), and every copy expires
``SHOPIPE_STATE_TTL_SECONDS`` (24 h) after its last write. Bodies of every resource a shop ever
touched, with no TTL, filled a 1 GiB Redis at ~80k orders; a week of bodies at 5 webhooks/s
would be ~30 GB. What the copy is needed for, the version guard against out-of-order
deliveries, needs only the version and only for Shopify's retry window (4 h): a copy without
its body is ~200 B, and a day of them at 5 webhooks/s is under 100 MB. Redis is not the record
of a shop's resources (Shopify is; ``SHOPIPE_ARCHIVE`` keeps every webhook in the bucket), and
holding no bodies also means holding no customer data to leak or redact. Ask for bodies when
a handler or an app reads them, with Redis sized for them (docs/operations.md, sizing);
``customers/data_request`` then reports them.
"""

from __future__ import annotations

from shopipe_worker.events import BadPayload, Event
from shopipe_worker.handlers import COMPLIANCE_TOPICS, parse_time, resource_id, shop_of
from shopipe_worker.registry import Context, Registry

KINDS = (
    "orders",
    "draft_orders",
    "products",
    "collections",
    "customers",
    "inventory_items",
    "inventory_levels",
    "fulfillments",
    "refunds",
    "locations",
)
REMOVING = frozenset({"delete", "disconnect"})

TOMBSTONE_SECONDS = 7 * 24 * 3600  # longer than Shopify's retries and reorderings last

# KEYS[1] state key; ARGV: version (integer microseconds), updated_at text, topic, lifetime
# (seconds), then the body if it is kept.
CAS = """
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'updated_at', ARGV[2], 'topic', ARGV[3])
if ARGV[5] then redis.call('HSET', KEYS[1], 'body', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] state key; ARGV: version, updated_at text, topic, tombstone lifetime (seconds).
# A delete always wins (Shopify cannot update a deleted resource); the tombstone keeps the
# highest version seen, so any copy delivered late is older and ignored.
TOMBSTONE = """
local cur = redis.call('HGET', KEYS[1], 'version')
local version = ARGV[1]
if cur and tonumber(cur) > tonumber(version) then version = cur end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', version, 'updated_at', ARGV[2], 'topic', ARGV[3],
           'deleted', '1')
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def identity(kind: str, payload: dict[str, object]) -> str:
    if kind == "inventory_levels":
        item = resource_id(payload.get("inventory_item_id"), "inventory_item_id")
        location = resource_id(payload.get("location_id"), "location_id")
        return f"{item}@{location}"
    return resource_id(payload.get("id"), "id")


def version_of(event: Event, payload: dict[str, object]) -> tuple[int, str]:
    """(microseconds, text) of the payload's version."""
    for text in (payload.get("updated_at"), event.triggered_at):
        if isinstance(text, str) and text:
            at = parse_time(text)
            if at is not None:
                return int(at * 1_000_000), text
    return int(event.received_at * 1_000_000), ""


async def apply_state(event: Event, ctx: Context) -> None:
    if event.topic in COMPLIANCE_TOPICS:
        return
    kind, _, action = event.topic.partition("/")
    payload = event.json_object()
    key = ctx.keys.state(shop_of(event), kind, identity(kind, payload))
    version, text = version_of(event, payload)
    if action in REMOVING:
        ctx.tx.eval(TOMBSTONE, 1, key, str(version), text, event.topic, str(TOMBSTONE_SECONDS))
        return
    if "id" not in payload and kind != "inventory_levels":
        raise BadPayload(f"{kind} payload has no id")
    s = ctx.settings
    body = (event.body,) if s.state_bodies else ()
    ctx.tx.eval(CAS, 1, key, str(version), text, event.topic, str(s.state_ttl_seconds), *body)


def register(registry: Registry) -> None:
    for kind in KINDS:
        registry.add(f"{kind}/*", apply_state, name="state")
