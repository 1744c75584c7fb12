"""The forward destination down for a minute under steady load (issue 17): nothing acknowledged is
lost, the route's breaker opens and stays open, the destination sees only the breaker's probes
while down (one every ``breaker_probe_seconds`` across both workers, not the retries of hundreds
of records), and once it is back every acknowledged webhook reaches it.

The whole path runs: signed webhooks POSTed to a receiver at a steady rate before, during and
after the outage (acknowledged = answered 200), stored in the bucket, announced on the stream,
and two workers with the forward route deliver them to a local destination that answers 503
while down and counts every request.

Duplicates: the design re-sends a webhook the app took only when the worker did not learn that
it took it (an answer lost to a timeout, a reset or a worker's death); none of these happen
here (the destination answers at once, well within the route's 30 s timeout even on a loaded
machine), so every webhook must be taken (2xx) exactly once. Requests answered 503 are attempts,
not deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from shopipe_receiver.sender import signed_headers
from shopipe_worker import dlq
from starlette.requests import Request
from starlette.responses import Response

from tests.forward_kit import APP_SECRET, destination, forward_env, receiver, workers
from tests.forward_kit import write_routes as routes_file
from tests.worker_kit import Kit, kit, settled, wait_for

pytestmark = pytest.mark.e2e
__all__ = ["kit"]

TOPIC = "orders/create"
OUTAGE_SECONDS = 60.0
PROBE_SECONDS = 2.0
RATE = 5.0  # webhooks per second, before, during and after the outage
WORKERS = 2
MAX_IN_FLIGHT = 4
WEBHOOK_ID = "x-shopify-webhook-id"


@pytest.mark.asyncio
@pytest.mark.timeout(280)
async def test_a_minute_long_outage_under_load_loses_nothing_and_sees_only_probes(
    kit: Kit, tmp_path: Path
) -> None:
    down = False
    answered: list[tuple[float, int, str]] = []  # (when, status, webhook id)

    async def answer(req: Request, _body: bytes) -> Response:
        status = 503 if down else 200
        answered.append((time.monotonic(), status, req.headers.get(WEBHOOK_ID, "")))
        return Response("down" if down else "ok", status)

    acked: dict[str, float] = {}  # webhook id -> when the receiver answered 200
    refused: list[str] = []  # answered otherwise (Shopify would send them again)
    stop = asyncio.Event()

    async def post(c: httpx.AsyncClient, url: str, n: int) -> None:
        body = json.dumps({"id": n, "total_price": "10.00"}).encode()
        h = signed_headers(TOPIC, body, APP_SECRET)
        try:
            ok = (await c.post(url, content=body, headers=h)).status_code == 200
        except httpx.HTTPError:
            ok = False
        wid = h["X-Shopify-Webhook-Id"]
        if ok:
            acked[wid] = time.monotonic()
        else:
            refused.append(wid)

    async def load(url: str) -> None:
        """POST one webhook every 1/RATE s until stopped, each on its own (a slow answer must
        not slow the load down), at most 50 at once; a pace, not a synchronisation."""
        posts: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=10) as c:
            next_at = time.monotonic()
            n = 0
            while not stop.is_set():
                if len(posts) < 50:
                    task = asyncio.create_task(post(c, url, n))
                    posts.add(task)
                    task.add_done_callback(posts.discard)
                    n += 1
                next_at += 1 / RATE
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            if posts:
                await asyncio.wait(posts, timeout=15)

    def taken() -> Counter[str]:
        return Counter(wid for _, status, wid in answered if status == 200)

    async with destination(answer) as (url, _seen):
        route = {
            "topics": [TOPIC],
            "url": url,
            # The destination answers at once; a long timeout keeps a loaded machine's event
            # loop stall from turning a taken delivery into a timeout (and a duplicate).
            "timeout_seconds": 30,
            "max_in_flight": MAX_IN_FLIGHT,
            "breaker_failures": 5,
            "breaker_probe_seconds": PROBE_SECONDS,
        }
        env = forward_env(
            routes_file(tmp_path / "routes.json", {"app": route}),
            # Deferred segments come back within 5 s: the drain starts soon after the breaker
            # closes, and a minute of retries stays a few GETs per second.
            SHOPIPE_RETRY_BASE_SECONDS="0.5",
            SHOPIPE_RETRY_MAX_SECONDS="5",
            # The records that failed before the breaker opened used one attempt; waiting on
            # the open breaker must use none, so a few attempts are plenty.
            SHOPIPE_MAX_ATTEMPTS="4",
        )
        async with receiver(kit) as rx, workers(kit, env, n=WORKERS) as regs:
            producer = asyncio.create_task(load(rx.url))
            try:

                async def breaker(state: str) -> bool:
                    doc = await regs[0].status(kit.master)
                    return bool(doc["forward"]["app"]["breaker"] == state)

                async def some_taken() -> bool:
                    return len(taken()) >= 10

                await wait_for(some_taken, timeout=60, what="deliveries before the outage")
                down = True
                went_down = time.monotonic()
                await wait_for(lambda: breaker("open"), timeout=30, what="the breaker open")
                opened = time.monotonic()
                # The outage lasts its minute; meanwhile the breaker must stay open (every
                # probe fails). A period, not a synchronisation.
                seen_closed = 0
                while time.monotonic() < went_down + OUTAGE_SECONDS:
                    seen_closed += not await breaker("open")
                    await asyncio.sleep(1.0)
                down = False
                back = time.monotonic()
                await wait_for(lambda: breaker("closed"), timeout=30, what="the breaker closed")
                # Load goes on a few seconds past the return, then stops.
                await wait_for(
                    lambda: _after(sum(t > back for t in acked.values()), 5 * RATE),
                    timeout=60,
                    what="load after the outage",
                )
            finally:
                stop.set()
                await producer

            async def all_taken() -> bool:
                return set(acked) <= set(taken())

            await wait_for(all_taken, timeout=120, what="every acknowledged webhook delivered")
            await wait_for(lambda: settled(kit), timeout=60, what="every segment finished")

    # While open, only probes: the requests that started once the breaker had been open a
    # second (anything in flight as it opened was answered at once) until the destination came
    # back are at most one per probe interval, shared by both workers through Redis (+1 for
    # the interval's two ends, +1 for the ms rounding of the master's clock), and probing
    # went on.
    start = opened + 1.0
    during = [t for t, status, _ in answered if start <= t < back]
    assert all(status == 503 for t, status, _ in answered if went_down < t < back)
    window = back - start
    assert len(during) <= window / PROBE_SECONDS + 2, (len(during), window)
    assert len(during) >= window / PROBE_SECONDS / 2, (len(during), window)
    assert seen_closed == 0
    # The load was steady: webhooks came in all through the outage (a loaded machine's receiver
    # may answer some late: at least half the pace).
    during_outage = [t for t in acked.values() if went_down <= t < back]
    assert len(during_outage) >= (back - went_down) * RATE / 2
    assert all(
        any(a <= t < a + 10 for t in during_outage) for a in _steps(went_down, back - 10, 10)
    ), "a 10 s stretch of the outage without a webhook"
    # Nothing lost: every acknowledged webhook was taken by the app, each exactly once
    # (no answer was lost, so no duplicate is allowed); only webhooks the receiver saw.
    counts = taken()
    assert set(acked) <= set(counts)
    assert set(counts) <= set(acked) | set(refused)
    assert [wid for wid, n in counts.items() if n > 1] == []
    assert await dlq.list_dead(kit.store) == []
    # No segment waits on the destination any more.
    r = await kit.master.get()
    assert await r.zcard(kit.keys.forward_waiting()) == 0


async def _after(n: int, want: float) -> bool:
    return n >= want


def _steps(start: float, stop: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((stop - start) // step) + 1)]
