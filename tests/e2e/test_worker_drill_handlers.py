"""Handlers loaded by the worker processes of the drills (SHOPIPE_HANDLERS), not tests.

``test/*`` records are counted per webhook id in Redis, inside the record's transaction, so a
count above 1 means a webhook was applied twice. A ``sleep`` field in the body slows the
handler, so a drill can interrupt a worker in the middle of a segment.
"""

from __future__ import annotations

import asyncio

from shopipe_worker.events import Event
from shopipe_worker.registry import Context, Registry


async def count(event: Event, ctx: Context) -> None:
    delay = event.json_object().get("sleep", 0)
    if isinstance(delay, int | float) and 0 < delay <= 5:
        await asyncio.sleep(delay)
    ctx.tx.hincrby(f"{ctx.keys.prefix}:test:count", event.webhook_id, 1)


def register(registry: Registry) -> None:
    registry.add("test/*", count)
