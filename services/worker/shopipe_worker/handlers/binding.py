"""What the signed body must say before a destructive or shop-wide topic is applied.

Shopify signs the body only: the topic, shop and id headers of a captured delivery can be
changed at will and the signature still verifies. So a topic that removes or flags data acts
only when its body names the same shop (compliance topics) or has the shape of a deletion
naming the resource (``*/delete``, ``inventory_levels/disconnect``). Anything else is a
``HeaderBodyMismatch``: permanent (the same bytes never start to match), dead-lettered with
reason ``header_body_mismatch`` and counted (``shopipe_worker_header_body_mismatch_total``).
Messages never quote the body or the headers.
"""

from __future__ import annotations

from typing import Any

from shopipe.errors import PermanentError

from shopipe_worker.events import Event
from shopipe_worker.handlers import resource_id

# Compliance topics whose body carries ``shop_domain`` and ``shop_id``.
SHOP_BOUND = frozenset({"shop/redact", "customers/redact", "customers/data_request"})
UNINSTALLED = "app/uninstalled"
REMOVING = frozenset({"delete", "disconnect"})
# A created or updated resource carries these; Shopify's deletion bodies never do. They tell a
# captured create/update body replayed under a delete topic from a genuine deletion.
_FULL_RESOURCE = ("created_at", "updated_at")
# The GraphQL type in ``admin_graphql_api_id`` for the kinds the state handler keeps.
_GID_TYPE = {
    "orders": "Order",
    "draft_orders": "DraftOrder",
    "products": "Product",
    "collections": "Collection",
    "customers": "Customer",
    "inventory_items": "InventoryItem",
    "locations": "Location",
}


class HeaderBodyMismatch(PermanentError):
    """The unsigned headers claim what the signed body does not say."""

    reason = "header_body_mismatch"


def is_destructive(topic: str) -> bool:
    """Topics that remove, flag or report on data: bound to the body before they act."""
    return topic in SHOP_BOUND or topic == UNINSTALLED or removes(topic)


def removes(topic: str) -> bool:
    return topic.partition("/")[2] in REMOVING


def _text(value: object) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _shop_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return str(value)


def body_shop_id(event: Event, payload: dict[str, Any]) -> str | None:
    """The shop id the body names (``None`` when it names none); the shop domain the body names
    must equal the header's, else HeaderBodyMismatch."""
    if event.topic == UNINSTALLED:
        # The shop object: ``myshopify_domain`` is the header's domain; ``domain`` may be the
        # shop's own domain, or the same myshopify one on shops without one.
        names = {_text(payload.get("myshopify_domain")), _text(payload.get("domain"))} - {""}
        if not event.shop or event.shop not in names:
            raise HeaderBodyMismatch("app/uninstalled body names another shop than its header")
        return _shop_id(payload.get("id"))
    if _text(payload.get("shop_domain")) != event.shop or not event.shop:
        raise HeaderBodyMismatch(f"{event.topic} body names another shop than its header")
    return _shop_id(payload.get("shop_id"))


def check_deletion(event: Event, payload: dict[str, Any]) -> None:
    """A ``*/delete`` (or ``inventory_levels/disconnect``) body must be a deletion: the
    resource's ids, none of a full resource's fields, and a GraphQL id naming the same one."""
    kind, _, action = event.topic.partition("/")
    if any(name in payload for name in _FULL_RESOURCE):
        raise HeaderBodyMismatch(f"{event.topic} body is a whole resource, not a deletion")
    try:
        if kind == "inventory_levels" and action == "disconnect":
            resource_id(payload.get("inventory_item_id"), "inventory_item_id")
            resource_id(payload.get("location_id"), "location_id")
            return
        rid = resource_id(payload.get("id"), "id")
    except PermanentError as e:
        raise HeaderBodyMismatch(f"{event.topic} body names no resource") from e
    gid = payload.get("admin_graphql_api_id")
    if gid is None:
        return
    expected = _GID_TYPE.get(kind)
    if (
        not isinstance(gid, str)
        or not gid.endswith(f"/{rid}")
        or (expected is not None and not gid.startswith(f"gid://shopify/{expected}/"))
    ):
        raise HeaderBodyMismatch(f"{event.topic} body's GraphQL id names another resource")


def check(event: Event) -> str | None:
    """Raise HeaderBodyMismatch unless the body supports the headers of a destructive topic;
    the shop id the body names, if any. Other topics pass unchecked."""
    if event.topic in SHOP_BOUND or event.topic == UNINSTALLED:
        return body_shop_id(event, event.json_object())
    if removes(event.topic):
        check_deletion(event, event.json_object())
    return None


async def guard(event: Event, _ctx: object) -> None:
    """``check`` as a handler: the worker runs it before the handlers of a destructive topic."""
    check(event)
