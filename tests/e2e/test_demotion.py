"""Graceful failovers under load: the old master is demoted while every process stays connected
(``SENTINEL FAILOVER``, what every Redis rollout does), and nothing may be lost, applied twice
or dead-lettered.

Workers run with ``SHOPIPE_MAX_ATTEMPTS=1``: a Redis error counted as a handler failure would
dead-letter the record at once, so "nothing dead-lettered" proves the demotion counted no
attempt. A webhook whose effect the demoted master dropped (written there after the promotion,
then discarded by its resync) must be applied again on the new master, its object kept until
a replica confirmed the markers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from shopipe import segment
from shopipe.address import fmt
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings, load_settings
from shopipe_devstack import Stack
from shopipe_devstack.redis import client

from tests.e2e.pipeline import GROUP, STREAM, Pipeline, exactly_once, synced_replica, until

pytestmark = pytest.mark.e2e

FAILOVERS = 3
GRACE = 10.0  # seconds every process has to be on the new master (the operator's stale grace)


def failover(stack: Stack) -> None:
    with client(stack.info.sentinels[0], None) as s:
        s.sentinel_failover(stack.info.master_name)


async def one_failover(p: Pipeline, n: int) -> None:
    """Under load: demote the master, then every process must be on the new one within
    GRACE seconds, and webhooks acknowledged again."""
    stack = p.stack
    since = len(p.sent)
    await until("100 more webhooks acknowledged", lambda: p.answered(200, since) >= 100, 60)
    old = stack.current_master()
    other = next(a for a in stack.info.redis_nodes if a != old)
    await until("the replica in sync", lambda: synced_replica(stack, other), 60)
    await asyncio.to_thread(failover, stack)
    new = fmt(await asyncio.to_thread(stack.wait_failover, old, 30.0))
    everyone = [*p.receivers, *p.workers]

    async def on_new() -> bool:
        docs = await asyncio.gather(*(asyncio.to_thread(p.status, s) for s in everyone))
        return all(d is not None and d.get("redis_master") == new for d in docs)

    await until(f"every process on the new master (failover {n})", on_new, GRACE)
    after = len(p.sent)
    await until("acknowledged after the failover", lambda: p.answered(200, after) >= 50, 60)


@pytest.mark.asyncio
async def test_sentinel_failover_under_load_three_times_nothing_lost_doubled_or_dead(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    p = await asyncio.to_thread(
        Pipeline(stack).start,
        2,
        True,
        2,
        {"SHOPIPE_MAX_ATTEMPTS": "1"},
        {"SHOPIPE_STALE_GRACE_SECONDS": str(GRACE)},
    )
    stop = asyncio.Event()
    load = asyncio.create_task(p.load(stop))
    try:
        for n in range(1, FAILOVERS + 1):
            await one_failover(p, n)
    finally:
        stop.set()
        await load
    acked = p.acked()
    exactly_once(await p.wait_processed(acked, timeout=120), acked)
    dead: Any = p.read(lambda r: list(r.scan_iter("shopipe:dead:*")))
    assert dead == [], f"{len(dead)} records dead-lettered by a demotion"
    # Every object goes once a replica confirmed its markers, and every entry is acknowledged.
    store = Buffer(load_settings(WorkerSettings, stack.info.service_env()))
    try:

        async def incoming_empty() -> bool:
            return not await store.list(segment.INCOMING)

        await until("incoming/ empty", incoming_empty, 120)
    finally:
        store.close()
    await until("nothing pending", lambda: p.read(_pending) == 0, 60)
    assert p.operator is not None
    status = await asyncio.to_thread(p.status, p.operator)
    assert status is not None
    assert status["failovers"] == FAILOVERS
    assert status["restarts"] == [], "the operator restarted a process: it was not on time"


def _pending(r: Any) -> int:
    return int(r.xpending(STREAM, GROUP)["pending"])
