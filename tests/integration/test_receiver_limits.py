"""HTTP limits before the HMAC (issue 14 §6) and the body-memory bound (issue 15 §1), on a real
receiver: too many headers or header bytes get 431, a head that trickles is closed at its
deadline, connections beyond the cap get 503, bodies beyond the memory budget get 503 unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from shopipe.metrics import REGISTRY
from shopipe_devstack import Stack
from shopipe_receiver.protocol import ARRIVED
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import Running, running
from starlette.types import Message, Receive, Scope, Send

from tests.receiver_kit import receiver_settings

pytestmark = pytest.mark.integration

SECRET = "limits-secret"
BODY = b'{"id": 1}'


def refused(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("shopipe_receiver_http_refused_total", {"reason": reason}) or 0.0
    )


@pytest_asyncio.fixture
async def receiver(stack: Stack) -> AsyncIterator[Running]:
    settings = receiver_settings(
        stack,
        SECRET,
        SHOPIPE_HTTP_MAX_HEADERS="40",
        SHOPIPE_HTTP_MAX_HEADER_BYTES="8192",
        SHOPIPE_HTTP_HEAD_TIMEOUT_SECONDS="1",
        SHOPIPE_HTTP_MAX_CONNECTIONS="4",
    )
    async with running(settings) as r:
        yield r


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):  # a reset after the server closed
        await writer.wait_closed()


async def connect(r: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = r.base.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


def head(r: Running, extra: list[tuple[str, str]], body: bytes = BODY) -> bytes:
    """A signed webhook's head with ``extra`` header lines added."""
    lines = [f"POST {r.receiver.settings.webhook_path} HTTP/1.1", "Host: x"]
    lines += [f"{k}: {v}" for k, v in signed_headers("orders/create", body, SECRET).items()]
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(r: Running, data: bytes) -> int:
    """Send ``data`` on a new connection; the answer's status (0: closed without one)."""
    reader, writer = await connect(r)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    except ConnectionError:
        return 0
    finally:
        await close(writer)
    return int(line.split()[1]) if line else 0


async def closed_by_server(reader: asyncio.StreamReader, seconds: float = 10.0) -> bytes:
    """What the server sent before it closed the connection (bounded wait)."""
    return await asyncio.wait_for(reader.read(), seconds)


@pytest.mark.asyncio
async def test_signed_webhook_within_the_limits_is_accepted(receiver: Running) -> None:
    extra = [(f"X-Extra-{i}", "v") for i in range(20)]
    assert await exchange(receiver, head(receiver, extra) + BODY) == 200


@pytest.mark.asyncio
async def test_too_many_headers_is_431_even_with_a_valid_signature(receiver: Running) -> None:
    before = refused("header_count")
    extra = [(f"X-Extra-{i}", "v") for i in range(1000)]
    assert await exchange(receiver, head(receiver, extra) + BODY) == 431
    assert refused("header_count") == before + 1


@pytest.mark.asyncio
async def test_too_many_header_bytes_is_431(receiver: Running) -> None:
    before = refused("header_bytes")
    extra = [("X-Big", "a" * 9000)]
    assert await exchange(receiver, head(receiver, extra) + BODY) == 431
    assert refused("header_bytes") == before + 1


@pytest.mark.asyncio
async def test_a_header_that_never_ends_is_cut_at_the_byte_limit(receiver: Running) -> None:
    """No line end ever comes: the parser would buffer it all; the byte count cuts it."""
    before = refused("header_bytes")
    reader, writer = await connect(receiver)
    try:
        writer.write(b"POST / HTTP/1.1\r\nX-Endless: ")
        for _ in range(64):  # bounded: 1 MiB at most, far past the 8 KiB limit
            if writer.is_closing() or reader.at_eof():
                break
            try:
                writer.write(b"a" * 16384)
                await writer.drain()
            except ConnectionError:
                break
        answer = await closed_by_server(reader)
    except ConnectionError:
        answer = b""
    finally:
        await close(writer)
    # Normally the 431 arrives; a reset racing our writes may swallow it, never a 200.
    assert answer.startswith(b"HTTP/1.1 431") or answer == b""
    assert refused("header_bytes") == before + 1


@pytest.mark.asyncio
async def test_a_trickling_head_is_closed_at_its_deadline(receiver: Running) -> None:
    before = refused("head_timeout")
    data = head(receiver, [])
    reader, writer = await connect(receiver)
    sent = 0
    try:
        # One byte every 50 ms would take over 20 s for this head; the deadline is 1 s.
        end = time.monotonic() + 30
        while sent < len(data) and not reader.at_eof() and time.monotonic() < end:
            try:
                writer.write(data[sent : sent + 1])
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            try:
                assert await asyncio.wait_for(reader.read(1), 0.05) == b""
                break  # closed, with no answer
            except TimeoutError:
                pass
    finally:
        await close(writer)
    assert sent < len(data), "the whole head was accepted byte by byte"
    assert refused("head_timeout") == before + 1


@pytest.mark.asyncio
async def test_a_connection_that_sends_nothing_is_closed(receiver: Running) -> None:
    reader, writer = await connect(receiver)
    try:
        assert await closed_by_server(reader) == b""
    finally:
        await close(writer)


@pytest.mark.asyncio
async def test_connections_beyond_the_cap_get_503(receiver: Running) -> None:
    before = refused("connections")
    ping = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    held = [await connect(receiver) for _ in range(4)]
    try:
        # A request on each proves the receiver holds them; keep-alive keeps them open.
        for reader, writer in held:
            writer.write(ping)
            assert (await asyncio.wait_for(reader.readline(), 10)).split()[1] == b"200"
            await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 10)
        assert await exchange(receiver, ping) == 503
        assert refused("connections") == before + 1
    finally:
        for _, writer in held:
            await close(writer)
    # Below the cap again: served (bounded poll until the closes have reached the server).
    deadline = time.monotonic() + 10
    while await exchange(receiver, ping) != 200:
        assert time.monotonic() < deadline, "still refused after the connections closed"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_body_over_the_memory_budget_is_503_at_once(stack: Stack) -> None:
    settings = receiver_settings(
        stack,
        SECRET,
        SHOPIPE_MAX_BODY_BYTES="1024",
        SHOPIPE_MAX_BODY_BYTES_IN_MEMORY="2048",
        SHOPIPE_BODY_TIMEOUT_SECONDS="30",
        SHOPIPE_ANSWER_DEADLINE_SECONDS="4",
    )
    big = b"x" * 1000
    async with running(settings) as r:
        # Two bodies that never finish arriving hold the whole budget between them.
        slow = [await connect(r) for _ in range(2)]
        try:
            for _, writer in slow:
                writer.write(head(r, [], big) + big[:10])
                await writer.drain()
            deadline = time.monotonic() + 10
            while r.receiver.budget.held < 2000:
                assert time.monotonic() < deadline, "the slow bodies never took the budget"
                await asyncio.sleep(0.01)
            small = b"y" * 100  # 2000 + 100 > 2048
            assert await exchange(r, head(r, [], small) + small) == 503
            assert r.receiver.shedding
            status = await r.receiver.status()
            assert status["body_bytes_held"] <= 2048
        finally:
            for _, writer in slow:
                await close(writer)
        # Their bytes come back when they go (408 at the deadline or a disconnect).
        deadline = time.monotonic() + 15
        while r.receiver.budget.held:
            assert time.monotonic() < deadline, "budget never given back"
            await asyncio.sleep(0.02)
        assert await exchange(r, head(r, []) + BODY) == 200
        # The store answers and nothing waits: /readyz says ready again.
        assert await r.receiver.ready()
        assert not r.receiver.shedding


@pytest.mark.asyncio
async def test_the_answer_deadline_counts_from_the_read_that_brought_the_head(
    receiver: Running,
) -> None:
    """Issue 15 §1: on a loop short of CPU a request's task may start well after its head was
    read; the deadline counts from the read, so that wait is inside it, not added to it."""
    r, loop = receiver, asyncio.get_running_loop()
    seen: list[tuple[float, float, Scope]] = []
    inner = r.receiver.webhook

    async def webhook(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope[ARRIVED], loop.time(), scope))
        await inner(scope, receive, send)

    r.receiver.webhook = webhook  # type: ignore[method-assign]
    written_at = loop.time()
    assert await exchange(r, head(r, []) + BODY) == 200
    arrived, started, scope = seen[0]
    assert written_at <= arrived <= started

    # The same request as if its head had been read one deadline ago: 503 at once, no PUT.
    assert r.receiver.commit is not None
    puts = r.receiver.commit.puts
    late = {**scope, ARRIVED: loop.time() - r.receiver.settings.answer_deadline_seconds}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await inner(late, receive, send)
    assert sent[0]["status"] == 503
    assert b"deadline" in sent[1]["body"]
    assert r.receiver.commit.puts == puts
