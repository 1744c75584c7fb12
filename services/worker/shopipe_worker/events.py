"""What a handler receives: one webhook record, its Shopify headers read out, its body lazily
parsed.

Headers are looked up case-insensitively: HTTP header names carry no case, and a receiver or a
replay tool may have stored them either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shopipe import shopify
from shopipe.errors import PermanentError
from shopipe.segment import Record

# The names a record's headers are stored under (shopify.WebhookHeaders.to_record), lower case.
H_TOPIC = shopify.canonical(shopify.TOPIC).lower()
H_SHOP = shopify.canonical(shopify.SHOP).lower()
H_WEBHOOK_ID = shopify.canonical(shopify.WEBHOOK_ID).lower()
H_EVENT_ID = shopify.canonical(shopify.EVENT_ID).lower()
H_API_VERSION = shopify.canonical(shopify.API_VERSION).lower()
H_TRIGGERED_AT = shopify.canonical(shopify.TRIGGERED_AT).lower()

_UNSET: Any = object()


class BadPayload(PermanentError):
    """The body is not the JSON the topic promises; retrying the same bytes cannot help."""


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@dataclass(frozen=True)
class Event:
    """One webhook. ``record_id`` is stable (``<segment name>:<index>``) and unique."""

    record_id: str
    topic: str
    shop: str
    webhook_id: str
    event_id: str
    api_version: str
    triggered_at: str
    received_at: float
    headers: Mapping[str, str]
    body: bytes
    _json: list[Any] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Record) -> Event:
        h = _lower(record.headers)
        return cls(
            record_id=record.id,
            topic=h.get(H_TOPIC, "").strip(),
            shop=h.get(H_SHOP, "").strip().lower(),
            webhook_id=h.get(H_WEBHOOK_ID, "").strip(),
            event_id=h.get(H_EVENT_ID, "").strip(),
            api_version=h.get(H_API_VERSION, "").strip(),
            triggered_at=h.get(H_TRIGGERED_AT, "").strip(),
            received_at=record.received_at,
            headers=h,
            body=record.body,
        )

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The parsed body, parsed once; BadPayload (permanent) if it is not JSON."""
        if not self._json:
            try:
                self._json.append(json.loads(self.body))
            except (UnicodeDecodeError, ValueError) as e:
                raise BadPayload(f"{self.topic or 'webhook'} body is not JSON") from e
        return self._json[0]

    def json_object(self) -> dict[str, Any]:
        """The parsed body when it must be a JSON object (every Shopify topic sends one)."""
        value = self.json()
        if not isinstance(value, dict):
            raise BadPayload(f"{self.topic or 'webhook'} body is not a JSON object")
        return value
