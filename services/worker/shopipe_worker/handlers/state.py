"""The latest copy of each resource in Redis: ``<prefix>:state:<shop>:<kind>:<id>`` (a hash of
``updated_at``, ``version``, ``topic``, ``body``).

Shopify delivers out of order, so a copy is written only when its version is newer than the
stored one. The version comes from the signed body (``updated_at``); only when the body has none
does the unsigned ``X-Shopify-Triggered-At`` count, and only within a bounded window around the
record's ``received_at`` (else the receive time): a forged far-future time cannot freeze a copy.
The compare and the write are one Lua script queued on the record's transaction: a concurrent
older update can neither slip in between nor apply without the done-markers.

``*/delete`` (and ``inventory_levels/disconnect``), with a deletion-shaped body
(``handlers.binding``), replace the copy with a tombstone (its version, ``deleted`` and no body)
that expires after a week: without it, an update delivered after the delete would bring the
resource back. A redaction (``handlers.compliance``) leaves tombstones too, kept for good: the
shop's ``<prefix>:redacted:<shop>`` and, for a customer's copies, ``redacted`` state hashes.
No write here brings back data at or below a redaction's version.

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
from shopipe_worker.handlers.binding import check_deletion, removes
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

TOMBSTONE_SECONDS = 7 * 24 * 3600  # longer than Shopify's retries and reorderings last
# How far X-Shopify-Triggered-At may lie from the receive time and still order copies: back
# over Shopify's retry window (48 h), forward only by clock skew. Outside it, the receive time.
TRIGGERED_BEFORE_SECONDS = 48 * 3600
TRIGGERED_AFTER_SECONDS = 300

# KEYS[1] state key, KEYS[2] shop redaction; ARGV: version (integer microseconds), updated_at
# text, topic, lifetime (seconds), then the body if it is kept.
CAS = """
local redacted = redis.call('GET', KEYS[2])
if redacted and tonumber(redacted) >= tonumber(ARGV[1]) then return 0 end
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'updated_at', ARGV[2], 'topic', ARGV[3])
if ARGV[5] then redis.call('HSET', KEYS[1], 'body', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] state key, KEYS[2] shop redaction; ARGV: version, updated_at text, topic, tombstone
# lifetime (seconds). A delete always wins over a copy (Shopify cannot update a deleted
# resource); the tombstone keeps the highest version seen, so any copy delivered late is older
# and ignored. A redaction's tombstone is kept as it is (no expiry put on it).
TOMBSTONE = """
local redacted = redis.call('GET', KEYS[2])
if redacted and tonumber(redacted) >= tonumber(ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[1], 'redacted') then return 0 end
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


def record_version(event: Event) -> tuple[int, str]:
    """(microseconds, text) of the record's own time: ``X-Shopify-Triggered-At`` when it lies
    within the bounded window around ``received_at``, else ``received_at``."""
    at = parse_time(event.triggered_at) if event.triggered_at else None
    if at is not None and (
        event.received_at - TRIGGERED_BEFORE_SECONDS
        <= at
        <= event.received_at + TRIGGERED_AFTER_SECONDS
    ):
        return int(at * 1_000_000), event.triggered_at
    return int(event.received_at * 1_000_000), ""


def version_of(event: Event, payload: dict[str, object]) -> tuple[int, str]:
    """(microseconds, text) of the payload's version: its signed ``updated_at``, else the
    record's bounded time (``record_version``)."""
    text = payload.get("updated_at")
    if isinstance(text, str) and text:
        at = parse_time(text)
        if at is not None:
            return int(at * 1_000_000), text
    return record_version(event)


def body_version(event: Event) -> int:
    """``version_of`` for any record, its body JSON or not (microseconds)."""
    try:
        payload = event.json()
    except BadPayload:
        payload = None
    return version_of(event, payload if isinstance(payload, dict) else {})[0]


async def apply_state(event: Event, ctx: Context) -> None:
    if event.topic in COMPLIANCE_TOPICS:
        return
    kind, _, _ = event.topic.partition("/")
    payload = event.json_object()
    shop = shop_of(event)
    redacted = ctx.keys.redacted(shop)
    if removes(event.topic):
        check_deletion(event, payload)
        key = ctx.keys.state(shop, kind, identity(kind, payload))
        version, text = version_of(event, payload)
        args = (str(version), text, event.topic, str(TOMBSTONE_SECONDS))
        ctx.tx.eval(TOMBSTONE, 2, key, redacted, *args)
        return
    if "id" not in payload and kind != "inventory_levels":
        raise BadPayload(f"{kind} payload has no id")
    key = ctx.keys.state(shop, kind, identity(kind, payload))
    version, text = version_of(event, payload)
    s = ctx.settings
    body = (event.body,) if s.state_bodies else ()
    args = (str(version), text, event.topic, str(s.state_ttl_seconds), *body)
    ctx.tx.eval(CAS, 2, key, redacted, *args)


def register(registry: Registry) -> None:
    for kind in KINDS:
        registry.add(f"{kind}/*", apply_state, name="state")
