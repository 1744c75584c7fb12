"""What each answer of a forward destination does, on the real stack (worker in-process,
Redis via Sentinel, SeaweedFS) against a local HTTP destination."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shopipe import shopify
from shopipe_worker import dlq
from shopipe_worker.forward import state
from starlette.requests import Request
from starlette.responses import Response

from tests.forward_kit import APP_SECRET, destination, forward_env, workers, write_routes
from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

TOPIC = "orders/create"


def routes(tmp_path: Path, url: str, **route: Any) -> dict[str, str]:
    path = write_routes(tmp_path / "routes.json", {"app": {"topics": [TOPIC], "url": url, **route}})
    return forward_env(path)


def body(n: int = 0) -> bytes:
    return json.dumps({"id": n, "note": "caf\u00e9"}, ensure_ascii=False).encode()


async def dead(kit: Kit) -> list[dlq.DeadLetter]:
    return await dlq.list_dead(kit.store, TOPIC)


def answers(*statuses: tuple[int, dict[str, str]]) -> Any:
    """An answer function giving ``statuses`` in turn, then 200."""
    left = list(statuses)

    async def answer(_req: Request, _body: bytes) -> Response:
        if left:
            status, extra = left.pop(0)
            return Response("x" * 5000 if status == 400 else "no", status, headers=extra)
        return Response("ok")

    return answer


@pytest.mark.asyncio
async def test_a_delivery_is_the_original_request_with_shopipe_headers(
    kit: Kit, tmp_path: Path
) -> None:
    async with destination() as (url, seen):
        env = routes(tmp_path, url, headers={"X-Env": "test"})
        async with workers(kit, env):
            await kit.produce([(headers(TOPIC, "wh-1", "ev-1"), body())])
            await wait_for(lambda: settled(kit), what="delivered")
    (req,) = seen.requests
    # Delivered: its sent mark stays (no re-send), its try count goes (no key per webhook left
    # for a day under noeviction).
    r = await kit.master.get()
    assert [k async for k in r.scan_iter(match=f"{kit.keys.prefix}:fwd:sent:*")]
    assert [k async for k in r.scan_iter(match=f"{kit.keys.prefix}:fwd:tries:*")] == []
    h = req["headers"]
    assert req["body"] == body()
    assert h["x-shopify-hmac-sha256"] == shopify.sign(body(), APP_SECRET)
    assert (h["x-shopify-topic"], h["x-shopify-webhook-id"], h["x-shopify-event-id"]) == (
        TOPIC,
        "wh-1",
        "ev-1",
    )
    assert h["x-shopify-shop-domain"] == "demo.myshopify.com"
    assert h["x-shopify-triggered-at"] == "2025-01-01T00:00:00Z"
    assert h["x-shopipe-record-id"].endswith(":0")
    assert h["x-shopipe-attempt"] == "1"
    assert h["x-shopipe-received-at"].endswith("Z")
    assert h["x-env"] == "test"
    assert h["content-type"] == "application/json"


@pytest.mark.asyncio
async def test_429_with_retry_after_pauses_the_route_then_it_is_delivered(
    kit: Kit, tmp_path: Path
) -> None:
    async with (
        destination(answers((429, {"Retry-After": "1"}))) as (url, seen),
        workers(kit, routes(tmp_path, url)),
    ):
        await kit.produce([(headers(TOPIC, "wh-1"), body())])
        await wait_for(lambda: settled(kit), what="delivered after the pause")
    assert [r["headers"]["x-shopipe-attempt"] for r in seen.requests] == ["1", "2"]
    # Nothing was sent before the Retry-After ran out (the pause is kept by the master's clock).
    assert seen.starts[1] - seen.starts[0] >= 0.9
    assert await dead(kit) == []


@pytest.mark.asyncio
async def test_a_retry_after_past_the_cap_is_cut_to_it(kit: Kit, tmp_path: Path) -> None:
    async with (
        destination(answers((503, {"Retry-After": "3600"}))) as (url, seen),
        workers(kit, routes(tmp_path, url, retry_after_max_seconds=0.5)),
    ):
        await kit.produce([(headers(TOPIC, "wh-1"), body())])
        await wait_for(lambda: settled(kit), timeout=30, what="delivered within the cap")
    assert len(seen.requests) == 2


@pytest.mark.asyncio
async def test_another_4xx_is_dead_lettered_with_its_status_and_a_bounded_excerpt(
    kit: Kit, tmp_path: Path
) -> None:
    async with destination(answers((400, {}))) as (url, seen), workers(kit, routes(tmp_path, url)):
        await kit.produce([(headers(TOPIC, "wh-1"), body())])
        await wait_for(lambda: settled(kit), what="dead-lettered")
    (dl,) = await dead(kit)
    assert dl.doc.reason == "forward_refused"
    assert "HTTP 400" in dl.doc.error
    assert "xxxx" in dl.doc.error
    assert len(dl.doc.error) < 400
    assert len(seen.requests) == 1  # permanent: not retried


@pytest.mark.asyncio
async def test_410_disables_the_route_until_it_is_enabled_again(kit: Kit, tmp_path: Path) -> None:
    r = await kit.master.get()
    keys = state.Keys(kit.settings.key_prefix)
    async with destination(answers((410, {}))) as (url, seen), workers(kit, routes(tmp_path, url)):
        await kit.produce([(headers(TOPIC, "wh-1"), body(1))])
        await wait_for(lambda: settled(kit), what="the 410")
        await kit.produce([(headers(TOPIC, "wh-2"), body(2))])
        await wait_for(lambda: settled(kit), what="the second, while disabled")
        assert len(seen.requests) == 1  # nothing sent to a disabled route
        reasons = sorted(d.doc.reason for d in await dead(kit))
        assert reasons == ["forward_gone", "forward_route_disabled"]
        assert await state.enable(r, keys, "app")
        await kit.produce([(headers(TOPIC, "wh-3"), body(3))])
        await wait_for(lambda: settled(kit), what="delivered once enabled")
    assert [json.loads(q["body"])["id"] for q in seen.requests] == [1, 3]


@pytest.mark.asyncio
async def test_a_destination_that_hangs_past_its_timeout_is_retried(
    kit: Kit, tmp_path: Path
) -> None:
    release = asyncio.Event()
    calls = 0

    async def hang_once(_req: Request, _body: bytes) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), timeout=10)
        return Response("ok")

    async with destination(hang_once) as (url, seen):
        async with workers(kit, routes(tmp_path, url, timeout_seconds=0.5)):
            await kit.produce([(headers(TOPIC, "wh-1"), body())])
            await wait_for(lambda: settled(kit), what="delivered on the second try")
        release.set()
    assert [r["headers"]["x-shopipe-attempt"] for r in seen.requests] == ["1", "2"]


@pytest.mark.asyncio
async def test_a_slow_answer_within_the_timeout_is_one_delivery(kit: Kit, tmp_path: Path) -> None:
    async def slow(_req: Request, _body: bytes) -> Response:
        await asyncio.sleep(0.5)
        return Response("ok")

    async with (
        destination(slow) as (url, seen),
        workers(kit, routes(tmp_path, url, timeout_seconds=5)),
    ):
        await kit.produce([(headers(TOPIC, f"wh-{i}"), body(i)) for i in range(3)])
        await wait_for(lambda: settled(kit), what="delivered")
    assert sorted(r["headers"]["x-shopipe-attempt"] for r in seen.requests) == ["1", "1", "1"]


@contextlib.asynccontextmanager
async def resetting(resets: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A raw HTTP destination that resets its first ``resets`` connections (RST), then
    answers 200; yields its URL and the outcomes in order."""
    log: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()  # a connection closed with no request: nothing to answer
            return
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        if len(log) < resets:
            log.append("reset")
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        log.append("ok")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", log
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_destination_that_resets_connections_is_retried(kit: Kit, tmp_path: Path) -> None:
    async with resetting(2) as (url, log), workers(kit, routes(tmp_path, url)):
        await kit.produce([(headers(TOPIC, "wh-1"), body())])
        await wait_for(lambda: settled(kit), timeout=60, what="delivered after two resets")
    assert log == ["reset", "reset", "ok"]
    assert await dead(kit) == []


@pytest.mark.asyncio
async def test_deliveries_go_on_when_the_master_has_forgotten_the_scripts(
    kit: Kit, tmp_path: Path
) -> None:
    """The limiter's and breaker's scripts are sent by their SHA: a master that does not know
    them (a failover to one that never ran them, a restart) is given them again."""
    async with (
        destination(answers((200, {}), (500, {}))) as (url, seen),
        workers(kit, routes(tmp_path, url)),
    ):
        await kit.produce([(headers(TOPIC, "wh-1"), body(1))])
        await wait_for(lambda: settled(kit), what="the first delivered")
        r = await kit.master.get()
        await r.script_flush()
        # A 500 first: the breaker's script counts it, on a master without it too.
        await kit.produce([(headers(TOPIC, "wh-2"), body(2))])
        await wait_for(lambda: settled(kit), what="the second delivered after a retry")
    got = [(json.loads(q["body"])["id"], q["headers"]["x-shopipe-attempt"]) for q in seen.requests]
    assert got == [(1, "1"), (2, "1"), (2, "2")]
