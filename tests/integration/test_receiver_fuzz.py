"""Hypothesis fuzzing of headers and bodies: the receiver answers every request with a documented
status, never a 5xx other than 503, never an unhandled exception."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shopipe import segment, shopify
from shopipe.config import ReceiverSettings, load_settings
from shopipe_devstack import Stack
from shopipe_receiver.server import running

# One worker runs the module, so its module-scoped receiver is started once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("receiver_fuzz")]

SECRET = "fuzz-secret"
FIXTURE_OK = [HealthCheck.function_scoped_fixture]
DOCUMENTED = {200, 400, 401, 408, 413, 503}

NAMES = [
    p + n
    for p in ("X-Shopify-", "Shopify-", "x-shopify-")
    for n in ("Topic", "Shop-Domain", "Webhook-Id", "Event-Id", "API-Version", "Triggered-At")
]
# What an HTTP header can carry: printable ASCII without surrounding whitespace (servers strip
# it, and the client refuses to send it).
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(
    str.strip
)
value = st.one_of(
    printable,
    st.sampled_from(["orders/create", "shop.myshopify.com", "2025-07", "../..", "a/b/c/d/e"]),
)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    """A real receiver served from its own loop in a thread; the sync client talks HTTP to it."""
    env = {
        **stack.info.receiver_env(),
        "SHOPIPE_SHOPIFY_SECRETS": SECRET,
        "SHOPIPE_STREAM": f"test:{uuid.uuid4().hex}",
        "SHOPIPE_MAX_BODY_BYTES": "4096",
        "SHOPIPE_HTTP_HOST": "127.0.0.1",
        "SHOPIPE_HTTP_PORT": "0",
    }
    settings = load_settings(ReceiverSettings, env)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with running(settings) as r:
                started.set_result(r.base)
                await stop.wait()
        except BaseException as e:
            if not started.done():
                started.set_exception(e)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        base = started.result(timeout=30)
        with httpx.Client(base_url=base, timeout=10) as c:
            yield c
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def check(resp_status: int, payload: dict[str, object]) -> None:
    assert resp_status in DOCUMENTED
    if resp_status == 200:
        segment.parse_record_id(str(payload["id"]))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=6000),
    headers=st.dictionaries(st.sampled_from(NAMES), value, max_size=8),
    signed=st.booleans(),
)
def test_fuzzed_headers_and_bodies_get_documented_statuses(
    client: httpx.Client, body: bytes, headers: dict[str, str], signed: bool
) -> None:
    sent = dict(headers)
    if signed:
        sent["X-Shopify-Hmac-Sha256"] = shopify.sign(body, SECRET)
    resp = client.post("/webhooks/shopify", content=body, headers=sent)
    check(resp.status_code, resp.json())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    topic=st.from_regex(r"[a-z_]{1,12}/[a-z_]{1,12}", fullmatch=True),
    event=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True),
    body=st.binary(max_size=500),
)
def test_fuzzed_valid_webhooks_are_accepted(
    client: httpx.Client, topic: str, event: str, body: bytes
) -> None:
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "fuzz.myshopify.com",
        "X-Shopify-Webhook-Id": event,
        "X-Shopify-Hmac-Sha256": shopify.sign(body, SECRET),
    }
    resp = client.post("/webhooks/shopify", content=body, headers=headers)
    assert resp.status_code == 200
    check(resp.status_code, resp.json())
