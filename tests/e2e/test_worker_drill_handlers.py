"""Handlers loaded by the worker processes of the drills (SHOPIPE_HANDLERS), not tests.

``test/*`` records are counted per webhook id in Redis, inside the record's transaction, so a
count above 1 means a webhook was applied twice. A ``sleep`` field in the body slows the
handler, so a drill can interrupt a worker in the middle of a segment. Each webhook's
receipt-to-done time (seconds) goes to ``test:latency`` and its receipt time (epoch seconds) to
``test:received``, for the drills that measure them.
"""

from __future__ import annotations

import asyncio
import time

from shopipe_worker.events import Event
from shopipe_worker.registry import Context, Registry


async def count(event: Event, ctx: Context) -> None:
    delay = event.json_object().get("sleep", 0)
    if isinstance(delay, int | float) and 0 < delay <= 5:
        await asyncio.sleep(delay)
    ctx.tx.hincrby(f"{ctx.keys.prefix}:test:count", event.webhook_id, 1)
    latency = f"{time.time() - event.received_at:.3f}"
    ctx.tx.hset(f"{ctx.keys.prefix}:test:latency", event.webhook_id, latency)
    ctx.tx.hset(f"{ctx.keys.prefix}:test:received", event.webhook_id, event.received_at)


def register(registry: Registry) -> None:
    registry.add("test/*", count)
