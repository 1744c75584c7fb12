"""`shopipe send`: sign and send realistic webhooks, then summarise what came back.

Each request gets a fresh webhook id and event id (as Shopify's deliveries do), so the worker
treats them as distinct events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from shopipe import shopify
from shopipe.progress import Progress

DEFAULT_SHOP = "example-store.myshopify.com"
API_VERSION = "2025-07"


def signed_headers(
    topic: str, body: bytes, secret: str, *, shop: str = DEFAULT_SHOP, newer: bool = False
) -> dict[str, str]:
    """Headers Shopify would send for ``body``: fresh ids, signature over the exact bytes."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    values = {
        shopify.TOPIC: topic,
        shopify.SIGNATURE: shopify.sign(body, secret),
        shopify.SHOP: shop,
        shopify.WEBHOOK_ID: str(uuid.uuid4()),
        shopify.EVENT_ID: str(uuid.uuid4()),
        shopify.API_VERSION: API_VERSION,
        shopify.TRIGGERED_AT: now,
    }
    named = {shopify.canonical(short, newer=newer): v for short, v in values.items()}
    return {"Content-Type": "application/json", **named}


@dataclass
class Summary:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def render(self) -> str:
        codes = ", ".join(f"{k} x {v}" for k, v in sorted(self.statuses.items()))
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"sent {self.sent} in {self.seconds:.2f}s ({rate:.0f}/s); status: {codes}\n"
            f"latency ms: p50 {self.percentile(50) * 1000:.1f}  "
            f"p95 {self.percentile(95) * 1000:.1f}  p99 {self.percentile(99) * 1000:.1f}"
        )


async def send_many(
    url: str,
    topic: str,
    body: bytes,
    secret: str,
    *,
    count: int,
    concurrency: int,
    shop: str = DEFAULT_SHOP,
    request_timeout: float = 10.0,
    progress: Progress | None = None,
) -> Summary:
    """Send ``count`` signed webhooks over ``concurrency`` connections."""
    summary = Summary()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    # One client per connection: httpx's shared pool spends more CPU finding a free connection
    # among many than sending on it (measured: ~100 webhooks/s at any concurrency).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # One TLS context for all of them: a client given none loads the CA bundle (~45 ms of CPU).
    tls = httpx.create_ssl_context()

    async def one() -> None:
        async with httpx.AsyncClient(verify=tls, limits=limits, timeout=request_timeout) as client:
            await drain(client)

    async def drain(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            headers = signed_headers(topic, body, secret, shop=shop)
            start = time.perf_counter()
            try:
                resp = await client.post(url, content=body, headers=headers)
                status = str(resp.status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            summary.latencies.append(time.perf_counter() - start)
            summary.statuses[status] += 1
            if progress is not None:
                progress(summary.sent, count)

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(max(1, min(concurrency, count)))))
    summary.seconds = time.perf_counter() - began
    return summary
