"""Hostile requests (issue 7, receiver side): each gets its documented status, the process keeps
serving, valid-signature oddities are stored for the worker, and a replayed body cannot escape
or overwrite anything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from shopipe import segment, shopify
from shopipe.buffer import Buffer
from shopipe_devstack import Stack
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import Running, running

from tests.receiver_kit import receiver_settings

pytestmark = pytest.mark.integration

SECRET = "bad-input-secret"


@pytest_asyncio.fixture
async def receiver(stack: Stack) -> AsyncIterator[Running]:
    async with running(receiver_settings(stack, SECRET)) as r:
        yield r


async def raw_request(r: Running, headers: list[tuple[str, str]], body: bytes) -> int:
    """Send bytes as written (duplicates, odd characters): no client library normalises them."""
    host, port = r.base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = f"POST {r.receiver.settings.webhook_path} HTTP/1.1\r\nHost: x\r\n".encode()
        for k, v in headers:
            head += k.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
        head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        writer.write(head + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(line.split()[1])


def items(body: bytes, **changes: str) -> list[tuple[str, str]]:
    h = signed_headers("orders/create", body, SECRET)
    h.pop("Content-Type")
    for k, v in changes.items():
        h[k.replace("_", "-")] = v
    return list(h.items())


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "topic",
    [
        "../../processed/x",
        "orders/../../x",
        "orders/create/..",
        "orders\\create",
        "orders/cre\tate",  # trailing whitespace is stripped by HTTP itself; inner is not
        "orders/%2e%2e",
        "ordérs/create",
        "orders/create\x7f",
        "",
    ],
)
async def test_topic_with_traversal_or_control_characters_is_400(
    receiver: Running, topic: str
) -> None:
    body = b'{"id": 1}'
    assert await raw_request(receiver, items(body, X_Shopify_Topic=topic), body) == 400


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "shop",
    ["../x.myshopify.com", "x.myshopify.com/../y", "x.myshopify.com\x0b", "x%2f.myshopify.com"],
)
async def test_shop_with_traversal_or_control_characters_is_400(
    receiver: Running, shop: str
) -> None:
    body = b'{"id": 1}'
    assert await raw_request(receiver, items(body, X_Shopify_Shop_Domain=shop), body) == 400


@pytest.mark.asyncio
async def test_control_characters_that_http_forbids_are_refused_by_the_server(
    receiver: Running,
) -> None:
    body = b'{"id": 1}'
    status = await raw_request(receiver, items(body, X_Shopify_Topic="orders/create\x00"), body)
    assert status == 400


@pytest.mark.asyncio
async def test_duplicate_headers(receiver: Running) -> None:
    body = b'{"id": 1}'
    base = items(body)
    # Same header twice with different values, in either spelling: which one counts is unknown.
    assert await raw_request(receiver, [*base, ("X-Shopify-Topic", "orders/updated")], body) == 400
    assert await raw_request(receiver, [*base, ("Shopify-Topic", "shop/redact")], body) == 400
    assert await raw_request(receiver, [*base, ("X-Shopify-Hmac-Sha256", "Zm9v")], body) == 401
    # Repeated with the same value is harmless.
    assert await raw_request(receiver, [*base, ("X-Shopify-Topic", "orders/create")], body) == 200
    # Conflicting lengths would let a proxy and us frame the body differently.
    conflicting = [*base, ("Content-Length", "3")]
    assert await raw_request(receiver, conflicting, body) == 400


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [b"", b"not json at all", b"\xff\xfe\x00binary", b"[1,2"])
async def test_empty_or_non_json_body_with_valid_signature_is_stored(
    receiver: Running, bucket: Buffer, body: bytes
) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        resp = await c.post(
            receiver.url, content=body, headers=signed_headers("orders/create", body, SECRET)
        )
    assert resp.status_code == 200
    name, index = segment.parse_record_id(resp.json()["id"])
    rec = segment.decode(await bucket.get(segment.incoming_key(name)))[index]
    assert rec.body == body  # stored as is; the worker dead-letters it with a reason


@pytest.mark.asyncio
async def test_replayed_body_under_another_topic_cannot_escape_or_overwrite(
    receiver: Running, bucket: Buffer
) -> None:
    # Shopify signs only the body: a captured body and signature pass under any topic.
    body = shopify.sample("orders/create")
    original = signed_headers("orders/create", body, SECRET)
    replay = {
        **original,
        "X-Shopify-Topic": "customers/redact",
        "X-Shopify-Webhook-Id": original["X-Shopify-Webhook-Id"],  # even the same delivery id
    }
    async with httpx.AsyncClient(timeout=10) as c:
        first = await c.post(receiver.url, content=body, headers=original)
        second = await c.post(receiver.url, content=body, headers=replay)
    assert first.status_code == second.status_code == 200
    ids = [first.json()["id"], second.json()["id"]]
    keys = [segment.incoming_key(segment.parse_record_id(i)[0]) for i in ids]
    assert ids[0] != ids[1]
    assert keys[0] != keys[1]
    assert all(segment.is_segment_key(k) for k in keys)
    first_rec = segment.decode(await bucket.get(keys[0]))[segment.parse_record_id(ids[0])[1]]
    assert first_rec.headers["X-Shopify-Topic"] == "orders/create"
    assert first_rec.body == body
    replayed = segment.decode(await bucket.get(keys[1]))[segment.parse_record_id(ids[1])[1]]
    assert replayed.headers["X-Shopify-Topic"] == "customers/redact"


@pytest.mark.asyncio
async def test_receiver_keeps_serving_after_hostile_requests(receiver: Running) -> None:
    body = b'{"id": 9}'
    for junk in ([("X-Shopify-Hmac-Sha256", "%%%")], items(body, X_Shopify_Topic="..")):
        assert await raw_request(receiver, junk, body) in (400, 401)
    assert await raw_request(receiver, items(body), body) == 200
