"""The receiver against the real stack: verify, store byte-exact, announce, refuse the rest."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import pytest_asyncio
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.config import ReceiverSettings
from shopipe.metrics import REGISTRY
from shopipe.sentinel import MasterClient, RedisTarget
from shopipe_devstack import Stack
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import Running, running

from tests.receiver_kit import receiver_settings

pytestmark = pytest.mark.integration

SECRET = "test-secret-new"
OLD_SECRET = "test-secret-old"


def settings_for(stack: Stack, **extra: str) -> ReceiverSettings:
    extra.setdefault("SHOPIPE_POD_NAME", f"test-{uuid.uuid4().hex[:6]}")
    return receiver_settings(stack, f"{SECRET},{OLD_SECRET}", **extra)


def by_hand(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest_asyncio.fixture
async def receiver(stack: Stack) -> AsyncIterator[Running]:
    async with running(settings_for(stack, SHOPIPE_MAX_BODY_BYTES="65536")) as r:
        yield r


async def stored_record(bucket: Buffer, record_id: str) -> segment.Record:
    name, index = segment.parse_record_id(record_id)
    return segment.decode(await bucket.get(segment.incoming_key(name)))[index]


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.post(url, content=body, headers=dict(headers))


@pytest.mark.asyncio
@pytest.mark.parametrize("newer", [False, True])
async def test_accepted_webhook_is_stored_byte_exact_with_its_headers(
    receiver: Running, bucket: Buffer, newer: bool
) -> None:
    body = b'{"id": 1, "note": "caf\xc3\xa9\\n"}\n\r\n\x00 trailing bytes kept'
    headers = signed_headers("orders/create", body, SECRET, newer=newer)
    resp = await post(receiver.url, body, headers)
    assert resp.status_code == 200
    rid = resp.json()["id"]
    rec = await stored_record(bucket, rid)
    assert rec.id == rid
    assert rec.body == body
    prefix = "Shopify-" if newer else "X-Shopify-"
    for short in ("Topic", "Shop-Domain", "Webhook-Id", "Event-Id", "API-Version", "Triggered-At"):
        assert rec.headers["X-Shopify-" + short] == headers[prefix + short]
    assert not any("hmac" in k.lower() for k in rec.headers)
    assert abs(rec.received_at - time.time()) < 60


@pytest.mark.asyncio
async def test_segment_is_announced_on_the_stream(receiver: Running, stack: Stack) -> None:
    body = b'{"id": 2}'
    resp = await post(receiver.url, body, signed_headers("orders/updated", body, SECRET))
    assert resp.status_code == 200
    name, _ = segment.parse_record_id(resp.json()["id"])
    s = receiver.receiver.settings
    client = MasterClient(RedisTarget.from_settings(s), service="test", pod="reader")
    try:
        deadline = time.monotonic() + 10
        entries: list[Any] = []
        while time.monotonic() < deadline:
            r = await client.get()
            entries = list(await r.xrange(s.stream) or [])
            if entries:
                break
            await asyncio.sleep(0.02)
    finally:
        await client.close()
    assert [e[1] for e in entries] == [{b"key": segment.incoming_key(name).encode(), b"n": b"1"}]


@pytest.mark.asyncio
async def test_rotation_accepts_old_and_new_secret(receiver: Running) -> None:
    for secret in (SECRET, OLD_SECRET):
        body = json.dumps({"secret": secret[-3:]}).encode()
        resp = await post(receiver.url, body, signed_headers("products/update", body, secret))
        assert resp.status_code == 200


@pytest.mark.asyncio
async def test_removed_secret_is_refused(stack: Stack) -> None:
    async with running(settings_for(stack, SHOPIPE_SHOPIFY_SECRETS=SECRET)) as r:
        body = b'{"id": 3}'
        resp = await post(r.url, body, signed_headers("orders/create", body, OLD_SECRET))
        assert resp.status_code == 401
        resp = await post(r.url, body, signed_headers("orders/create", body, SECRET))
        assert resp.status_code == 200


def _with(headers: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(headers)
    for k, v in changes.items():
        name = k.replace("_", "-")
        if v is None:
            out.pop(name, None)
        else:
            out[name] = v
    return out


BODY = b'{"id": 4}'


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"X_Shopify_Hmac_Sha256": None}, 401),
        ({"X_Shopify_Hmac_Sha256": "not*base64"}, 401),
        ({"X_Shopify_Hmac_Sha256": hmac.new(SECRET.encode(), BODY, "sha256").hexdigest()}, 401),
        ({"X_Shopify_Hmac_Sha256": by_hand(b'{"id": 5}', SECRET)}, 401),
        ({"X_Shopify_Hmac_Sha256": by_hand(BODY, "wrong")}, 401),
        ({"X_Shopify_Topic": None}, 400),
        ({"X_Shopify_Topic": "orders/../../x"}, 400),
        ({"X_Shopify_Shop_Domain": "evil.example.com"}, 400),
        ({"X_Shopify_Webhook_Id": None}, 400),
        ({"X_Shopify_API_Version": "v1"}, 400),
    ],
)
async def test_refusals(receiver: Running, change: dict[str, str | None], status: int) -> None:
    headers = _with(signed_headers("orders/create", BODY, SECRET), **change)
    resp = await post(receiver.url, BODY, headers)
    assert resp.status_code == status
    if status == 401:
        assert resp.json() == {"error": "unauthorized"}
    else:
        named = next(k.replace("_", "-") for k in change)
        assert resp.json()["header"] == named


@pytest.mark.asyncio
async def test_declared_length_over_cap_is_413_before_reading(receiver: Running) -> None:
    before = metric("shopipe_receiver_requests_total", topic="unknown", outcome="too_large")
    body = b"x" * 70000
    resp = await post(receiver.url, body, signed_headers("orders/create", body, SECRET))
    assert resp.status_code == 413
    after = metric("shopipe_receiver_requests_total", topic="unknown", outcome="too_large")
    assert after == before + 1


@pytest.mark.asyncio
async def test_chunked_body_growing_past_cap_is_413(receiver: Running) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(200):  # 200 KiB, far past the 64 KiB cap
            sent += 1
            yield b"y" * 1024

    async with httpx.AsyncClient(timeout=10) as c:
        try:
            resp = await c.post(receiver.url, content=chunks(), headers={"X-Shopify-Topic": "a/b"})
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pytest.fail("the receiver should answer 413, not drop the connection first")
    assert resp.status_code == 413


@pytest.mark.asyncio
async def test_slow_body_times_out_with_408(stack: Stack) -> None:
    # A raw socket: announce 100 bytes, send 6, then stall; the answer must come anyway.
    async with running(settings_for(stack, SHOPIPE_BODY_TIMEOUT_SECONDS="0.3")) as r:
        host, port = r.base.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            path = r.receiver.settings.webhook_path
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
                + b'{"id":'
            )
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
    assert status_line.split()[1] == b"408"


@pytest.mark.asyncio
async def test_other_methods_and_paths(receiver: Running) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        assert (await c.get(receiver.url)).status_code == 405
        assert (await c.put(receiver.url, content=b"x")).status_code == 405
        assert (await c.post(receiver.base + "/nope", content=b"x")).status_code == 404


@pytest.mark.asyncio
async def test_a_webhook_routed_through_starlette_is_handled_the_same(
    receiver: Running, bucket: Buffer
) -> None:
    # The fast path takes every POST to the webhook path; Starlette's route is the fallback
    # (e.g. under a root_path). Call it directly: same checks, same durable write.
    transport = httpx.ASGITransport(app=receiver.receiver.starlette)
    path = receiver.receiver.settings.webhook_path
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as c:
        bad = await c.post(path, content=BODY, headers=signed_headers("a/b", BODY, "wrong"))
        resp = await c.post(path, content=BODY, headers=signed_headers("orders/paid", BODY, SECRET))
    assert bad.status_code == 401
    assert resp.status_code == 200
    assert (await stored_record(bucket, resp.json()["id"])).body == BODY


@pytest.mark.asyncio
async def test_status_health_ready_and_metrics(receiver: Running) -> None:
    body = b'{"id": 6}'
    assert (await post(receiver.url, body, signed_headers("shop/redact", body, SECRET))).is_success
    async with httpx.AsyncClient(timeout=10) as c:
        status = (await c.get(receiver.base + "/status")).json()
        assert status["service"] == "receiver"
        assert status["version"]
        assert status["last_storage_success"] > time.time() - 60
        assert (await c.get(receiver.base + "/healthz")).status_code == 200
        assert (await c.get(receiver.base + "/readyz")).status_code == 200
        text = (await c.get(receiver.base + "/metrics")).text
    for name in (
        "shopipe_receiver_requests_total",
        "shopipe_receiver_request_seconds",
        "shopipe_receiver_storage_seconds",
        "shopipe_receiver_body_bytes",
        "shopipe_receiver_segments_total",
        "shopipe_receiver_segment_records",
        "shopipe_receiver_announce_failures_total",
        "shopipe_receiver_storage_failures_total",
    ):
        assert name in text
    assert 'shopipe_receiver_requests_total{outcome="accepted",topic="shop/redact"}' in text


@pytest.mark.asyncio
async def test_redis_master_is_reported_once_used(receiver: Running, stack: Stack) -> None:
    body = b'{"id": 7}'
    assert (
        await post(receiver.url, body, signed_headers("orders/create", body, SECRET))
    ).is_success
    master = f"{stack.current_master()[0]}:{stack.current_master()[1]}"
    deadline = time.monotonic() + 10
    seen = None
    async with httpx.AsyncClient(timeout=10) as c:
        while time.monotonic() < deadline:
            seen = (await c.get(receiver.base + "/status")).json()["redis_master"]
            if seen:
                break
            await asyncio.sleep(0.02)
    assert seen == master


@pytest.mark.asyncio
async def test_access_log_is_json_without_body_signature_or_secret(
    receiver: Running, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"marker": "BODY-MARKER-123"}'
    headers = signed_headers("orders/create", body, SECRET)
    with caplog.at_level("INFO"):
        resp = await post(receiver.url, body, headers)
        bad = await post(receiver.url, body, {**headers, "X-Shopify-Hmac-Sha256": "Zm9v"})
    assert resp.status_code == 200
    assert bad.status_code == 401
    from shopipe.logs import JsonFormatter

    fmt = JsonFormatter("receiver")
    lines = [fmt.format(r) for r in caplog.records if r.name == "shopipe_receiver.access"]
    assert len(lines) == 2
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["status"] == 200
    assert parsed[0]["record"] == resp.json()["id"]
    assert parsed[1]["outcome"] == "unauthorized"
    for line in lines:
        assert "BODY-MARKER" not in line
        assert headers["X-Shopify-Hmac-Sha256"] not in line
        assert SECRET not in line


@pytest.mark.asyncio
async def test_idle_connections_close_after_the_configured_keepalive(stack: Stack) -> None:
    """SHOPIPE_HTTP_KEEPALIVE_SECONDS reaches the server (uvicorn's own default is 5 s)."""
    settings = settings_for(stack, SHOPIPE_HTTP_KEEPALIVE_SECONDS="1")
    async with running(settings) as r:
        host, port = settings.http_host, int(r.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            answered = time.monotonic()
            async with asyncio.timeout(10):
                while await reader.read(4096):  # the small body, then EOF when closed
                    pass
            idle = time.monotonic() - answered
        finally:
            writer.close()
            await writer.wait_closed()
    assert 0.5 < idle < 4, idle


@pytest.mark.asyncio
async def test_ops_port_serves_ops_endpoints_and_the_webhook_port_only_webhooks(
    stack: Stack,
) -> None:
    """With SHOPIPE_OPS_PORT (what the chart sets), a public webhook port shows no metrics or
    status, only whether the receiver is healthy and ready."""
    async with running(settings_for(stack, SHOPIPE_OPS_PORT="0")) as r:
        assert r.ops != r.base
        body = b'{"id": 7}'
        assert (await post(r.url, body, signed_headers("shop/redact", body, SECRET))).is_success
        async with httpx.AsyncClient(timeout=10) as c:
            for path in ("/metrics", "/status"):
                assert (await c.get(r.base + path)).status_code == 404, path
                assert (await c.get(r.ops + path)).status_code == 200, path
            for path in ("/readyz", "/healthz"):  # a load balancer's health check: both ports
                assert (await c.get(r.base + path)).status_code == 200, path
                assert (await c.get(r.ops + path)).status_code == 200, path
            assert "shopipe_receiver_requests_total" in (await c.get(r.ops + "/metrics")).text
            assert (await c.get(r.ops + "/status")).json()["service"] == "receiver"
            assert (await c.post(r.ops + "/webhooks/shopify", content=body)).status_code == 404
