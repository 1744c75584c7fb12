"""Destructive topics are bound to the signed body (handlers.binding)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from shopipe.errors import PermanentError
from shopipe.segment import Record
from shopipe_worker.events import Event
from shopipe_worker.handlers.binding import HeaderBodyMismatch, check, is_destructive
from shopipe_worker.processor import reason_of

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[2] / "services" / "core" / "shopipe" / "samples"
SHOP = "example-store.myshopify.com"


def event(topic: str, body: Any, shop: str = SHOP) -> Event:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": shop}
    return Event.from_record(Record("0000000000001-0123456789abcdef.seg:0", 1.0, headers, raw))


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_genuine_compliance_bodies_pass_and_name_the_shop_id():
    assert check(event("shop/redact", sample("shop_redact.json"))) == "70123456"
    assert check(event("customers/redact", sample("customers_redact.json"))) == "70123456"
    assert check(event("customers/data_request", sample("customers_data_request.json")))
    assert check(event("app/uninstalled", sample("app_uninstalled.json"))) == "70123456"


@pytest.mark.parametrize(
    "topic", ["shop/redact", "customers/redact", "customers/data_request", "app/uninstalled"]
)
@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_no_sample_body_acts_for_another_shop(topic: str, name: str):
    with pytest.raises(HeaderBodyMismatch):
        check(event(topic, sample(name), shop="victim.myshopify.com"))


def test_an_uninstall_matches_on_either_domain_field():
    body = {"id": 1, "domain": SHOP, "myshopify_domain": None}
    assert check(event("app/uninstalled", body)) == "1"
    with pytest.raises(HeaderBodyMismatch):
        check(event("app/uninstalled", {"id": 1}))


@pytest.mark.parametrize(
    "body",
    [
        {"id": 5},
        {"id": 5, "admin_graphql_api_id": "gid://shopify/Order/5"},
        {"id": "5", "phone": None, "addresses": []},
    ],
)
def test_deletion_shaped_bodies_pass(body: dict[str, Any]):
    check(event("orders/delete", body))


@pytest.mark.parametrize(
    "body",
    [
        {},  # names nothing
        {"id": True},
        {"id": 5, "updated_at": "2025-01-01T00:00:00Z"},  # a whole resource
        {"id": 5, "created_at": "2025-01-01T00:00:00Z"},
        {"id": 5, "admin_graphql_api_id": "gid://shopify/Order/6"},  # another resource
        {"id": 5, "admin_graphql_api_id": "gid://shopify/Product/5"},  # another kind
        json.loads(sample("orders_create.json")),
        json.loads(sample("shop_redact.json")),
    ],
)
def test_other_bodies_under_a_delete_topic_are_a_mismatch(body: dict[str, Any]):
    with pytest.raises(HeaderBodyMismatch):
        check(event("orders/delete", body))


def test_disconnect_needs_item_and_location():
    check(event("inventory_levels/disconnect", {"inventory_item_id": 1, "location_id": 2}))
    with pytest.raises(HeaderBodyMismatch):
        check(event("inventory_levels/disconnect", {"inventory_item_id": 1}))


def test_which_topics_are_bound():
    for topic in ("shop/redact", "app/uninstalled", "themes/delete", "inventory_levels/disconnect"):
        assert is_destructive(topic)
    for topic in ("orders/create", "orders/updated", "shop/update", "test/ping"):
        assert not is_destructive(topic)
        check(event(topic, b"not json"))  # unchecked: never even parsed


def test_a_mismatch_is_permanent_with_its_own_reason():
    e = HeaderBodyMismatch("x")
    assert isinstance(e, PermanentError)
    assert reason_of(e, True) == "header_body_mismatch"
    assert reason_of(RuntimeError("x"), False) == "attempts"
    assert reason_of(PermanentError("x"), True) == "permanent"
