import pytest
from shopipe.segment import Record
from shopipe.stream import Keys
from shopipe_worker.events import BadPayload, Event
from shopipe_worker.handlers import parse_time, resource_id, shop_of
from shopipe_worker.handlers.state import identity, version_of
from shopipe_worker.ledger import marker_keys

pytestmark = pytest.mark.unit


def event(headers, received_at: float = 100.0) -> Event:
    rec = Record("0000000000001-0123456789abcdef.seg:3", received_at, headers, b"{}")
    return Event.from_record(rec)


def test_parse_time_understands_offsets_and_zulu():
    assert parse_time("2025-01-01T00:00:00Z") == parse_time("2024-12-31T19:00:00-05:00")
    assert parse_time("2025-01-01T00:00:00") == parse_time("2025-01-01T00:00:00+00:00")
    assert parse_time("yesterday") is None


def test_version_prefers_updated_at_then_triggered_at_then_receive_time():
    at = parse_time("2025-01-01T00:00:00Z")
    assert at is not None
    ev = event({"X-Shopify-Triggered-At": "2025-01-01T00:00:01Z"}, received_at=at + 60)
    assert version_of(ev, {"updated_at": "2025-01-01T00:00:00Z"})[0] == int(at * 1_000_000)
    assert version_of(ev, {})[0] == int((at + 1) * 1_000_000)
    assert version_of(event({}), {"updated_at": "garbage"}) == (100_000_000, "")


def test_an_unsigned_time_counts_only_near_the_receive_time():
    at = parse_time("2025-01-01T00:00:00Z")
    assert at is not None
    received = int(at * 1_000_000)

    def version(triggered: str) -> int:
        return version_of(event({"X-Shopify-Triggered-At": triggered}, received_at=at), {})[0]

    # A far-future time (which would freeze the copy against every real update) is ignored...
    assert version("2999-01-01T00:00:00Z") == received
    assert version("2025-01-01T00:05:01Z") == received  # just past the clock-skew allowance
    assert version("2025-01-01T00:04:59Z") == received + 299 * 1_000_000
    # ...while an earlier time (Shopify's retries come hours later) orders copies, within 48 h.
    assert version("2024-12-31T00:00:00Z") == received - 24 * 3600 * 1_000_000
    assert version("2024-12-29T23:59:59Z") == received
    # The signed body's own time always wins.
    ev = event({"X-Shopify-Triggered-At": "2999-01-01T00:00:00Z"}, received_at=at)
    assert version_of(ev, {"updated_at": "2030-01-01T00:00:00Z"})[1] == "2030-01-01T00:00:00Z"


def test_identity_of_inventory_levels_is_item_and_location():
    assert identity("inventory_levels", {"inventory_item_id": 5, "location_id": 9}) == "5@9"
    assert identity("orders", {"id": 123}) == "123"
    with pytest.raises(BadPayload):
        identity("orders", {"id": "a:b*"})
    with pytest.raises(BadPayload):
        identity("orders", {})


@pytest.mark.parametrize("shop", ["", "a*b.myshopify.com", "x:y.myshopify.com", "noperiod"])
def test_shop_must_be_a_plain_domain(shop):
    with pytest.raises(BadPayload):
        shop_of(event({"X-Shopify-Shop-Domain": shop}))


def test_resource_id_refuses_booleans_and_none():
    for bad in (True, None, "", "x" * 200):
        with pytest.raises(BadPayload):
            resource_id(bad, "id")


def test_markers_key_delivery_and_event_with_topic():
    keys = Keys("p")
    ev = event(
        {
            "X-Shopify-Webhook-Id": "w",
            "X-Shopify-Event-Id": "e",
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Shop-Domain": "s.myshopify.com",
        }
    )
    assert marker_keys(keys, ev) == [
        "p:done:wh:s.myshopify.com:orders/create:w",
        "p:done:ev:s.myshopify.com:orders/create:e",
    ]
    # Without a webhook id the record id stands in; no event marker without an event id.
    bare = event({})
    assert marker_keys(keys, bare) == ["p:done:wh:::record:0000000000001-0123456789abcdef.seg:3"]
