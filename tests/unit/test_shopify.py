"""Shopify HMAC and header validation, against vectors computed independently here."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shopipe import shopify
from shopipe.segment import Record
from shopipe.shopify import HeaderError, WebhookHeaders, sign, verify
from shopipe_receiver.sender import signed_headers
from shopipe_worker.events import BadPayload, Event
from shopipe_worker.handlers import shop_of

pytestmark = pytest.mark.unit

GOOD = {
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "example-store.myshopify.com",
    "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    "X-Shopify-API-Version": "2025-07",
    "X-Shopify-Triggered-At": "2025-11-25T15:15:33.877041743Z",
    "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
}


def found(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> shopify.Found:
    """Headers as the receiver gets them (ASGI's raw bytes), grouped as it groups them."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return shopify.shopify_headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in items])


def parsed(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> WebhookHeaders:
    """The receiver's path: grouped, then validated."""
    return shopify.validate(found(headers))


def by_hand(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_sign_matches_a_fixed_known_answer() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    digest = bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    body = b"what do ya want for nothing?"
    assert sign(body, "Jefe") == base64.b64encode(digest).decode()
    assert verify(body, base64.b64encode(digest).decode(), ["Jefe"])


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64))
def test_sign_is_base64_hmac_sha256_of_raw_bytes(body: bytes, secret: str) -> None:
    expected = by_hand(body, secret)
    assert sign(body, secret) == expected
    assert verify(body, expected, [secret])


def test_hex_digest_is_refused() -> None:
    body = b'{"id":1}'
    hexsig = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert not verify(body, hexsig, ["s3cret"])


def test_signature_over_another_body_is_refused() -> None:
    assert not verify(b'{"id":2}', by_hand(b'{"id":1}', "k"), ["k"])


@pytest.mark.parametrize("sig", [None, "", "not base64!!", "YWJj", "=" * 44, "é" * 44])
def test_missing_or_malformed_signature_is_refused(sig: str | None) -> None:
    assert not verify(b"{}", sig, ["k"])


def test_rotation_accepts_any_configured_secret_and_refuses_removed_one() -> None:
    body = json.dumps({"id": 7}).encode()
    old, new = by_hand(body, "old-secret"), by_hand(body, "new-secret")
    assert verify(body, old, ["new-secret", "old-secret"])
    assert verify(body, new, ["new-secret", "old-secret"])
    assert not verify(body, old, ["new-secret"])
    assert not verify(body, new, [])


def test_parse_headers_reads_either_spelling() -> None:
    newer = {k.replace("X-Shopify-", "Shopify-"): v for k, v in GOOD.items()}
    for headers in (GOOD, newer, {k.lower(): v for k, v in GOOD.items()}):
        h = parsed(headers)
        assert (h.topic, h.shop, h.webhook_id) == (
            "orders/create",
            "example-store.myshopify.com",
            GOOD["X-Shopify-Webhook-Id"],
        )
        assert h.api_version == "2025-07"
        assert h.event_id == GOOD["X-Shopify-Event-Id"]
        assert h.triggered_at == GOOD["X-Shopify-Triggered-At"]


def test_optional_headers_may_be_absent() -> None:
    h = parsed({k: GOOD[k] for k in list(GOOD)[:3]})
    assert h.api_version is None
    assert h.event_id is None
    assert h.triggered_at is None


@pytest.mark.parametrize(
    "name", ["X-Shopify-Topic", "X-Shopify-Shop-Domain", "X-Shopify-Webhook-Id"]
)
def test_missing_required_header_is_named(name: str) -> None:
    headers = {k: v for k, v in GOOD.items() if k != name}
    with pytest.raises(HeaderError) as e:
        parsed(headers)
    assert e.value.header == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Shopify-Topic", "../../etc/passwd"),
        ("X-Shopify-Topic", "orders/../create"),
        ("X-Shopify-Topic", "Orders/Create"),
        ("X-Shopify-Topic", "orders"),
        ("X-Shopify-Topic", "orders/create\x00"),
        ("X-Shopify-Topic", "orders/create\r\nx"),
        ("X-Shopify-Topic", "orders//create"),
        ("X-Shopify-Topic", "/orders/create"),
        ("X-Shopify-Topic", "orders/create/"),
        ("X-Shopify-Shop-Domain", "evil.com"),
        ("X-Shopify-Shop-Domain", "shop.myshopify.com.evil.com"),
        ("X-Shopify-Shop-Domain", "../x.myshopify.com"),
        ("X-Shopify-Shop-Domain", "a/b.myshopify.com"),
        ("X-Shopify-Shop-Domain", "shop\t.myshopify.com"),
        ("X-Shopify-Webhook-Id", "a b"),
        ("X-Shopify-Webhook-Id", "../x"),
        ("X-Shopify-Webhook-Id", "x" * 200),
        ("X-Shopify-API-Version", "latest"),
        ("X-Shopify-Triggered-At", "yesterday"),
        ("X-Shopify-Event-Id", "a:b/c"),
    ],
)
def test_bad_header_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(HeaderError) as e:
        parsed({**GOOD, name: value})
    assert e.value.header == name
    assert str(e.value).startswith(f"{name}: ")


def test_spellings_that_disagree_are_refused() -> None:
    pairs = [*GOOD.items(), ("Shopify-Topic", "orders/updated")]
    with pytest.raises(HeaderError) as e:
        parsed(pairs)
    assert e.value.header == "X-Shopify-Topic"


def test_duplicate_header_with_same_value_is_accepted() -> None:
    pairs = [*GOOD.items(), ("X-Shopify-Topic", "orders/create")]
    assert parsed(pairs).topic == "orders/create"


def test_signature_is_none_when_repeated_differently() -> None:
    twice = [("X-Shopify-Hmac-Sha256", "a"), ("Shopify-Hmac-Sha256", "b")]
    assert shopify.signature_in(found(twice)) is None
    assert shopify.signature_in(found([("Shopify-Hmac-Sha256", "a")])) == "a"


def test_record_headers_are_canonical_keep_extras_and_drop_signature() -> None:
    raw = {**GOOD, "X-Shopify-Hmac-Sha256": "c2ln", "X-Shopify-Shop-Id": "70123456", "Other": "x"}
    out = shopify.record_headers(parsed(raw), found(raw))
    assert out["X-Shopify-Topic"] == "orders/create"
    assert out["X-Shopify-Shop-Id"] == "70123456"
    assert "X-Shopify-Hmac-Sha256" not in out
    assert "Other" not in out
    # Stored headers parse back to the same values (the worker reads them).
    assert parsed(out) == parsed(raw)


def test_headers_group_by_short_name_in_order_whatever_the_case_and_spelling() -> None:
    pairs = [*GOOD.items(), ("Shopify-Topic", "orders/create"), ("Host", "x"), ("X-Other", "y")]
    grouped = found(pairs)  # names as sent, mixed case
    assert grouped == shopify.shopify_headers([(k.lower().encode(), v.encode()) for k, v in pairs])
    assert grouped["topic"] == ["orders/create", "orders/create"]
    assert grouped["shop-domain"] == [GOOD["X-Shopify-Shop-Domain"]]
    assert "other" not in grouped
    assert "host" not in grouped
    # HTTP header bytes are latin-1.
    assert shopify.shopify_headers([(b"x-shopify-note", "caf\u00e9".encode("latin-1"))]) == {
        "note": ["caf\u00e9"]
    }
    assert "" not in shopify.shopify_headers([(b"x-shopify-", b"v")])  # a bare prefix


def test_every_sample_is_json() -> None:
    for topic in shopify.SAMPLE_TOPICS:
        assert isinstance(json.loads(shopify.sample(topic)), dict)


@pytest.mark.parametrize("newer", [False, True])
def test_signed_headers_of_send_parse_and_verify(newer: bool) -> None:
    body = shopify.sample("orders/create")
    headers = signed_headers("orders/create", body, "k", shop="s.myshopify.com", newer=newer)
    prefix = "Shopify-" if newer else "X-Shopify-"
    assert all(k.startswith(prefix) for k in headers if k != "Content-Type")
    assert parsed(headers).shop == "s.myshopify.com"
    assert verify(body, shopify.signature_in(found(headers)), ["k"])


@pytest.mark.parametrize(
    ("shop", "ok"),
    [
        ("example-store.myshopify.com", True),
        ("a.myshopify.com", True),
        ("shop.example.com", False),
        ("a*b.myshopify.com", False),
        ("x:y.myshopify.com", False),
        ("../x.myshopify.com", False),
        ("-a.myshopify.com", False),
    ],
)
def test_one_shop_pattern_for_receiver_and_worker(shop: str, ok: bool) -> None:
    assert shopify.is_shop(shop) is ok
    with contextlib.nullcontext() if ok else pytest.raises(HeaderError):
        parsed({**GOOD, "X-Shopify-Shop-Domain": shop})
    rec = Record(id="x", received_at=0.0, headers={"X-Shopify-Shop-Domain": shop}, body=b"")
    with contextlib.nullcontext() if ok else pytest.raises(BadPayload):
        shop_of(Event.from_record(rec))


def test_worker_reads_the_headers_the_receiver_stores() -> None:
    stored = parsed(GOOD).to_record()
    ev = Event.from_record(Record(id="x", received_at=0.0, headers=stored, body=b""))
    assert (ev.topic, ev.shop, ev.webhook_id) == (
        "orders/create",
        "example-store.myshopify.com",
        GOOD["X-Shopify-Webhook-Id"],
    )
    assert (ev.event_id, ev.api_version, ev.triggered_at) == (
        GOOD["X-Shopify-Event-Id"],
        "2025-07",
        GOOD["X-Shopify-Triggered-At"],
    )
