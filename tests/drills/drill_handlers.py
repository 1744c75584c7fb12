"""Handlers loaded by the drills' worker processes (SHOPIPE_HANDLERS), not tests.

Each ``test/*`` record leaves two traces: a line ``<webhook id>`` appended to
``$DRILL_RUNS_DIR/<pod>.runs`` every time the handler runs (a run whose transaction then fails
is recorded too), and +1 on its webhook id in ``shopipe:test:count`` queued on ``ctx.tx``, which
applies together with the record's done-marker or not at all. The checker reads both. A
``sleep`` field in the body slows the handler down.
"""

from __future__ import annotations

import asyncio
import os

from shopipe_worker.events import Event
from shopipe_worker.registry import Context, Registry

RUNS_DIR = os.environ.get("DRILL_RUNS_DIR", "")
POD = os.environ.get("SHOPIPE_POD_NAME", "worker")


async def record(event: Event, ctx: Context) -> None:
    delay = event.json_object().get("sleep", 0)
    if isinstance(delay, int | float) and 0 < delay <= 5:
        await asyncio.sleep(delay)  # a slower handler: workers hold entries mid-batch
    if RUNS_DIR:
        # One short O_APPEND write per run: lines of concurrent runs never interleave.
        fd = os.open(f"{RUNS_DIR}/{POD}.runs", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{event.webhook_id}\n".encode())
        finally:
            os.close(fd)
    ctx.tx.hincrby(f"{ctx.keys.prefix}:test:count", event.webhook_id, 1)


def register(registry: Registry) -> None:
    registry.add("test/*", record)
