"""Built-in handlers (state, compliance) and what they share."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from shopipe.shopify import is_shop

from shopipe_worker.events import BadPayload, Event

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

COMPLIANCE_TOPICS = frozenset(
    {"customers/redact", "customers/data_request", "shop/redact", "app/uninstalled"}
)


def shop_of(event: Event) -> str:
    """The event's shop, checked before it becomes part of a Redis key (shopify.is_shop), so a
    forged header cannot inject a glob character or a key separator."""
    if not is_shop(event.shop):
        raise BadPayload("webhook has no valid shop domain")
    return event.shop


def resource_id(value: object, what: str) -> str:
    """A payload id as a key part: numbers and plain tokens only."""
    if isinstance(value, bool) or value is None:
        raise BadPayload(f"payload has no valid {what}")
    text = str(value)
    if not _ID.match(text):
        raise BadPayload(f"payload has no valid {what}")
    return text


def parse_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time (Shopify's ``updated_at``), None when unparseable."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
