"""The receiver answers in time, always (issue 15 §1): with S3 stalled behind a proxy on loopback
(it accepts and never answers, like SeaweedFS paused with SIGSTOP), every webhook is answered
503 before Shopify's 5 s, PUTs in flight never pass the cap, /readyz turns unready, webhooks that
come once every slot is held past the deadline are refused at once without their bodies being
held, and once the store answers again /readyz is ready and webhooks get 200.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import pytest
from shopipe.metrics import REGISTRY
from shopipe_devstack import Stack
from shopipe_devstack.slowproxy import SlowProxy
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import running

from tests.receiver_kit import receiver_settings

pytestmark = pytest.mark.e2e

SECRET = "overload-secret"
DEADLINE = 2.0  # seconds: SHOPIPE_ANSWER_DEADLINE_SECONDS of this test
CAP = 2  # SHOPIPE_MAX_PUTS_IN_FLIGHT of this test
SHOPIFY_TIMEOUT = 5.0


async def post(c: httpx.AsyncClient, url: str, i: int) -> tuple[int, float]:
    """(status, seconds until answered)."""
    body = b'{"n": %d}' % i
    start = time.monotonic()
    resp = await c.post(url, content=body, headers=signed_headers("orders/create", body, SECRET))
    return resp.status_code, time.monotonic() - start


async def post_raw(c: httpx.AsyncClient, url: str, i: int) -> tuple[int, bytes]:
    body = b'{"n": %d}' % i
    resp = await c.post(url, content=body, headers=signed_headers("orders/create", body, SECRET))
    return resp.status_code, resp.content


async def until(cond: Callable[[], Awaitable[bool]], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def puts_in_flight() -> float:
    return REGISTRY.get_sample_value("shopipe_receiver_puts_in_flight") or 0.0


@pytest.mark.asyncio
async def test_stalled_store_gives_503_in_time_capped_puts_and_unready_until_it_recovers(
    stack: Stack,
) -> None:
    s3 = urlsplit(stack.info.s3_endpoint)
    assert s3.hostname is not None
    assert s3.port is not None
    async with SlowProxy(s3.hostname, s3.port) as proxy:
        settings = receiver_settings(
            stack,
            SECRET,
            SHOPIPE_S3_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
            SHOPIPE_ANSWER_DEADLINE_SECONDS=str(DEADLINE),
            SHOPIPE_MAX_PUTS_IN_FLIGHT=str(CAP),
            # PUTs stay stuck for the whole stall (the default would fail them after ~4 s).
            SHOPIPE_S3_READ_TIMEOUT_SECONDS="30",
            SHOPIPE_S3_MAX_ATTEMPTS="1",
        )
        async with running(settings) as r, httpx.AsyncClient(timeout=15) as c:
            assert [s for s, _ in await asyncio.gather(*(post(c, r.url, i) for i in range(4)))] == [
                200
            ] * 4
            assert (await c.get(r.base + "/readyz")).status_code == 200

            proxy.stall()
            peak = 0.0
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:  # bounded by the load below
                    peak = max(peak, puts_in_flight())
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            # Offered open loop, 40 webhooks/s for 2 s: far more than a stalled store takes.
            sends = []
            for i in range(80):
                sends.append(asyncio.create_task(post(c, r.url, 100 + i)))
                await asyncio.sleep(0.025)
            answers = await asyncio.gather(*sends)
            sampling = False
            await sampler

            assert {s for s, _ in answers} == {503}
            # Answered at the deadline, well before Shopify gives up (behaviour, not speed).
            assert max(t for _, t in answers) < SHOPIFY_TIMEOUT - 0.5
            status = await r.receiver.status()
            assert status["segments_in_flight_peak"] == CAP
            assert peak == CAP
            assert status["shedding"] is True
            assert (await c.get(r.base + "/readyz")).status_code == 503

            # Every slot now held by a PUT older than the deadline: a webhook could not be
            # durable in time, so it is refused at once, unread, its body never held.
            commit = r.receiver.commit
            assert commit is not None
            assert commit.behind(DEADLINE)
            submitted, held = commit.records, r.receiver.budget.held  # held: the stuck PUTs'
            refused = [await post_raw(c, r.url, 500 + i) for i in range(5)]
            assert {s for s, _ in refused} == {503}
            assert all(b"slower than the answer deadline" in body for _, body in refused)
            assert commit.records == submitted
            assert r.receiver.budget.held == held

            proxy.resume()

            async def ready() -> bool:
                return (await c.get(r.base + "/readyz")).status_code == 200

            await until(ready, "/readyz ready after the store recovered")
            after = await asyncio.gather(*(post(c, r.url, 1000 + i) for i in range(10)))
            assert [s for s, _ in after] == [200] * 10
            assert (await r.receiver.status())["segments_in_flight_peak"] == CAP
