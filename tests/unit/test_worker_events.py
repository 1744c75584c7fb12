import pytest
from shopipe.errors import ConfigError, PermanentError
from shopipe.segment import Record
from shopipe_worker.events import BadPayload, Event
from shopipe_worker.registry import Registry, build, check_pattern, matches

pytestmark = pytest.mark.unit

HEADERS = {
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "Demo.myshopify.com",
    "X-Shopify-Webhook-Id": "wh-1",
    "X-Shopify-Event-Id": "ev-1",
    "X-Shopify-API-Version": "2025-07",
    "X-Shopify-Triggered-At": "2025-01-01T00:00:00Z",
}


def event(body: bytes = b'{"id": 1}', headers=None) -> Event:
    rec = Record("0000000000001-0123456789abcdef.seg:0", 1.5, headers or HEADERS, body)
    return Event.from_record(rec)


def test_event_reads_shopify_headers_case_insensitively():
    ev = event(headers={k.lower(): v for k, v in HEADERS.items()})
    assert (ev.topic, ev.shop, ev.webhook_id, ev.event_id) == (
        "orders/create",
        "demo.myshopify.com",
        "wh-1",
        "ev-1",
    )
    assert ev.api_version == "2025-07"
    assert ev.triggered_at == "2025-01-01T00:00:00Z"
    assert ev.received_at == 1.5
    assert ev.header("X-SHOPIFY-TOPIC") == "orders/create"


def test_event_json_is_parsed_lazily_and_once():
    ev = event(b'{"id": 7}')
    first = ev.json()
    assert first == {"id": 7}
    assert ev.json() is first


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b""])
def test_event_json_of_a_bad_body_is_a_permanent_error(body):
    with pytest.raises(BadPayload) as info:
        event(body).json()
    assert isinstance(info.value, PermanentError)
    assert "not json" not in str(info.value).lower().replace("is not json", "")


def test_event_json_object_refuses_a_list():
    with pytest.raises(BadPayload):
        event(b"[1, 2]").json_object()


def test_patterns_match_whole_parts():
    assert matches(check_pattern("orders/*"), "orders/create")
    assert not matches(check_pattern("orders/*"), "orders_x/create")
    assert not matches(check_pattern("orders/*"), "orders/create/extra")
    assert matches(check_pattern("*"), "anything/at_all")
    assert matches(check_pattern("shop/redact"), "shop/redact")
    assert not matches(check_pattern("shop/redact"), "shop/update")


@pytest.mark.parametrize("bad", ["", "orders/", "Orders/*", "orders/cre*", "../x"])
def test_bad_patterns_are_refused(bad):
    with pytest.raises(ConfigError):
        check_pattern(bad)


def test_registry_returns_handlers_in_registration_order_and_nothing_for_unknown():
    reg = Registry()

    async def a(ev, ctx):
        return None

    async def b(ev, ctx):
        return None

    reg.add("orders/*", a, name="a")
    reg.on("orders/create", "products/*")(b)
    assert [n for n, _ in reg.handlers_for("orders/create")] == ["a", "b"]
    assert [n for n, _ in reg.handlers_for("products/update")] == ["b"]
    assert reg.handlers_for("carts/update") == []


def test_build_loads_builtins_and_refuses_unknown_modules():
    reg = build(["state", "compliance"], [])
    assert [n for n, _ in reg.handlers_for("orders/updated")] == ["state"]
    assert [n for n, _ in reg.handlers_for("shop/redact")] == ["compliance"]
    # customers/redact is a compliance topic; state sees it too but ignores it.
    assert "compliance" in [n for n, _ in reg.handlers_for("customers/redact")]
    with pytest.raises(ConfigError):
        build(["nope"], [])
    with pytest.raises(ConfigError):
        build([], ["no_such_module_for_shopipe"])
    with pytest.raises(ConfigError):
        build([], ["json"])  # importable, but no register(registry)
