"""Realistic signed Shopify webhooks for the load generator.

Bodies look like Shopify's (an order with line items, addresses and a customer; products;
customers; inventory levels) and are sized 2-30 KB, log-uniformly, so most are small and a few
are large, as in a real shop. Every request carries its own webhook id, event id and resource id,
and its body is signed with the shop's secret exactly as Shopify signs it (base64 HMAC-SHA256 of
the raw body), so the receiver does the full verification work on each one.

Building a body from a template per size bucket and substituting ids keeps generation cheap
(tens of microseconds), so the generator spends its CPU on sending, not on JSON.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

from shopipe.shopify import sign

MIN_BYTES = 2 * 1024
MAX_BYTES = 30 * 1024
API_VERSION = "2025-07"
_ID_MARK = "9999999999999"  # same width as a Shopify id; replaced per request
_BUCKETS = 24

TOPICS = (
    ("orders/create", 0.45),
    ("orders/updated", 0.25),
    ("products/update", 0.15),
    ("customers/update", 0.10),
    ("inventory_levels/update", 0.05),
)


@dataclass(frozen=True)
class Webhook:
    """One request to send: the path is the caller's, everything else is here."""

    body: bytes
    headers: tuple[tuple[str, str], ...]
    webhook_id: str


def _address(i: int) -> dict[str, Any]:
    return {
        "first_name": "Ada",
        "last_name": f"Lovelace {i}",
        "address1": f"{100 + i} Analytical Engine Street",
        "address2": "Floor 2",
        "city": "London",
        "province": "England",
        "country": "United Kingdom",
        "zip": "EC1A 1BB",
        "phone": "+44 20 7946 0000",
        "company": None,
        "latitude": 51.5072,
        "longitude": -0.1276,
        "country_code": "GB",
        "province_code": "ENG",
    }


def _line_item(i: int) -> dict[str, Any]:
    return {
        "id": 466157049 + i,
        "admin_graphql_api_id": f"gid://shopify/LineItem/{466157049 + i}",
        "fulfillable_quantity": 1,
        "fulfillment_service": "manual",
        "gift_card": False,
        "grams": 200,
        "name": f"Organic cotton T-shirt - Size {i % 5}",
        "price": "19.00",
        "price_set": {
            "shop_money": {"amount": "19.00", "currency_code": "EUR"},
            "presentment_money": {"amount": "19.00", "currency_code": "EUR"},
        },
        "product_id": 632910392 + i,
        "quantity": 1 + i % 3,
        "requires_shipping": True,
        "sku": f"TSHIRT-{i:05d}",
        "taxable": True,
        "title": "Organic cotton T-shirt",
        "variant_id": 808950810 + i,
        "variant_title": f"Size {i % 5}",
        "vendor": "Acme Apparel",
        "properties": [{"name": "engraving", "value": "none"}],
        "tax_lines": [{"price": "3.04", "rate": 0.19, "title": "VAT"}],
        "discount_allocations": [],
    }


def _order(items: int) -> dict[str, Any]:
    return {
        "id": int(_ID_MARK),
        "admin_graphql_api_id": f"gid://shopify/Order/{_ID_MARK}",
        "name": "#1001",
        "email": "ada@example.com",
        "created_at": "2025-11-25T10:00:00+01:00",
        "updated_at": "2025-11-25T10:00:01+01:00",
        "currency": "EUR",
        "financial_status": "paid",
        "fulfillment_status": None,
        "total_price": f"{19 * items:.2f}",
        "subtotal_price": f"{19 * items:.2f}",
        "total_tax": f"{3.04 * items:.2f}",
        "buyer_accepts_marketing": False,
        "tags": "flash-sale",
        "customer": {"id": 207119551, "email": "ada@example.com", "first_name": "Ada"},
        "billing_address": _address(1),
        "shipping_address": _address(2),
        "shipping_lines": [{"code": "Standard", "price": "4.90", "title": "Standard"}],
        "line_items": [_line_item(i) for i in range(items)],
    }


def _product(variants: int) -> dict[str, Any]:
    return {
        "id": int(_ID_MARK),
        "title": "Organic cotton T-shirt",
        "body_html": "<p>Soft, fair and organic.</p>",
        "vendor": "Acme Apparel",
        "product_type": "Shirts",
        "updated_at": "2025-11-25T10:00:01+01:00",
        "status": "active",
        "variants": [_line_item(i) for i in range(variants)],
    }


def _customer(addresses: int) -> dict[str, Any]:
    return {
        "id": int(_ID_MARK),
        "email": "ada@example.com",
        "updated_at": "2025-11-25T10:00:01+01:00",
        "addresses": [_address(i) for i in range(addresses)],
    }


def _inventory(pad: int) -> dict[str, Any]:
    return {
        "inventory_item_id": int(_ID_MARK),
        "location_id": 24826418,
        "available": 42,
        "updated_at": "2025-11-25T10:00:01+01:00",
        "admin_graphql_api_id": "gid://shopify/InventoryLevel/24826418?inventory_item_id=1",
        "note": "x" * pad,
    }


def _template(topic: str, target: int) -> str:
    """A body of about ``target`` bytes for ``topic`` (grown one list element at a time)."""
    build = {
        "orders/create": _order,
        "orders/updated": _order,
        "products/update": _product,
        "customers/update": _customer,
        "inventory_levels/update": _inventory,
    }[topic]
    if topic == "inventory_levels/update":
        base = json.dumps(build(0))
        return json.dumps(build(max(0, target - len(base))))
    n = 1
    text = json.dumps(build(n))
    # Bounded: each step adds ~900 bytes until the target (<= 30 KB) is reached.
    while len(text) < target and n < 1000:
        bigger = json.dumps(build(n + 1))
        if len(bigger) > MAX_BYTES:
            break
        n, text = n + 1, bigger
    return text


class Generator:
    """Deterministic stream of unique, signed webhooks. Webhook and event ids are random
    UUIDs from the seeded generator; resource ids count up from a per-seed base, so streams of
    different seeds share no id."""

    def __init__(self, secret: str, *, seed: int = 7, shops: int = 20) -> None:
        self._secret = secret
        self._base = 7_000_000_000_000 + (seed % 100_000) * 10_000_000
        self._rng = random.Random(seed)
        self._shops = [f"shop-{i:03d}.myshopify.com" for i in range(shops)]
        self._topics = [t for t, _ in TOPICS]
        self._weights = [w for _, w in TOPICS]
        self._seq = 0
        self._templates: dict[tuple[str, int], str] = {}

    def _size_bucket(self) -> int:
        # Log-uniform between MIN and MAX bytes, quantised to a few buckets of templates.
        u = self._rng.random()
        return int(u * (_BUCKETS - 1) + 0.5)

    def _body(self, topic: str, bucket: int) -> str:
        key = (topic, bucket)
        if key not in self._templates:
            ratio = math.log(MAX_BYTES / MIN_BYTES) * bucket / (_BUCKETS - 1)
            self._templates[key] = _template(topic, int(MIN_BYTES * math.exp(ratio)))
        return self._templates[key]

    def next(self) -> Webhook:
        self._seq += 1
        topic = self._rng.choices(self._topics, self._weights)[0]
        shop = self._shops[self._rng.randrange(len(self._shops))]
        resource_id = str(self._base + self._seq)
        body = self._body(topic, self._size_bucket()).replace(_ID_MARK, resource_id).encode()
        webhook_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        event_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        headers = (
            ("Content-Type", "application/json"),
            ("X-Shopify-Topic", topic),
            ("X-Shopify-Shop-Domain", shop),
            ("X-Shopify-Webhook-Id", webhook_id),
            ("X-Shopify-Event-Id", event_id),
            ("X-Shopify-API-Version", API_VERSION),
            ("X-Shopify-Triggered-At", "2025-11-25T09:00:01.123Z"),
            ("X-Shopify-Hmac-Sha256", sign(body, self._secret)),
        )
        return Webhook(body, headers, webhook_id)


def http_request(hook: Webhook, host: str, path: str) -> bytes:
    """The exact HTTP/1.1 bytes of one POST (keep-alive)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(hook.body)}"]
    lines += [f"{k}: {v}" for k, v in hook.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + hook.body
