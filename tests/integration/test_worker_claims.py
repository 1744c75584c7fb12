"""Live consumers heartbeat what they hold, so a short claim threshold takes over only the work
of dead or paused consumers, never work still running (real Redis via Sentinel, SeaweedFS)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from shopipe_worker import streamops

from tests.worker_kit import Kit, headers, hget, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest


def slow(seconds: float) -> bytes:
    return json.dumps({"sleep": seconds}).encode()


async def started(kit: Kit, wid: str) -> bool:
    return await hget(kit, kit.attempts_key, wid) is not None


@pytest.mark.asyncio
async def test_a_handler_slower_than_the_claim_threshold_is_not_run_twice(kit: Kit):
    """Claim idle is 1 s here; the handler takes 3.5 s while another consumer looks for idle
    entries to reclaim. The holder has one slot, so only the other consumer reclaims."""
    assert kit.settings.claim_idle_seconds == 1.0
    c1 = kit.consumer("w1", kit.with_settings(SHOPIPE_POD_NAME="w1", SHOPIPE_CONCURRENCY="1"))
    run1 = asyncio.create_task(c1.run())
    try:
        await kit.produce([(headers("test/ping", "slow"), slow(3.5))])
        await wait_for(lambda: started(kit, "slow"), what="w1 started the record")
        async with kit.running("w2"):
            await wait_for(lambda: settled(kit), timeout=30, what="slow segment done")
    finally:
        c1.stop()
        await asyncio.wait_for(run1, timeout=20)
    assert await hget(kit, kit.attempts_key, "slow") == b"1"  # the handler ran once
    assert await kit.counts() == {"slow": 1}


@pytest.mark.asyncio
async def test_a_drain_longer_than_the_claim_threshold_is_not_taken_over(kit: Kit):
    c1 = kit.consumer("w1")
    run1 = asyncio.create_task(c1.run())
    try:
        await kit.produce([(headers("test/ping", "draining"), slow(3.0))])
        await wait_for(lambda: started(kit, "draining"), what="w1 started the record")
        async with kit.running("w2"):
            c1.stop()  # drains for up to 5 s, heartbeating what it finishes
            await asyncio.wait_for(run1, timeout=20)
            await wait_for(lambda: settled(kit), timeout=30, what="segment done")
    finally:
        c1.stop()
        await asyncio.wait_for(run1, timeout=20)
    assert await hget(kit, kit.attempts_key, "draining") == b"1"
    assert await kit.counts() == {"draining": 1}


@pytest.mark.asyncio
async def test_a_heartbeat_refreshes_only_entries_the_consumer_still_owns(kit: Kit):
    """A consumer back from a pause past the threshold must not take back what another
    consumer reclaimed meanwhile (XCLAIM alone would)."""
    s = kit.settings
    r = await kit.master.get()
    await kit.produce([(headers("test/ping", "owned"), b"{}")])
    await r.xgroup_create(s.stream, s.consumer_group, id="0")
    [entry] = await streamops.read(r, s.stream, s.consumer_group, "paused", 10, 10)
    _, taken = await streamops.autoclaim(r, s.stream, s.consumer_group, "other", 0, "0-0", 10)
    assert [e.id for e in taken] == [entry.id]

    assert await streamops.touch(r, s.stream, s.consumer_group, "paused", [entry.id]) == set()
    rows: Any = await r.xpending_range(s.stream, s.consumer_group, "-", "+", 10)
    assert [(row["consumer"], row["times_delivered"]) for row in rows] == [(b"other", 2)]

    # Its owner's heartbeat refreshes it, without counting a delivery; a release sets the idle.
    mine = await streamops.touch(r, s.stream, s.consumer_group, "other", [entry.id], 60_000)
    assert mine == {entry.id}
    [row] = await r.xpending_range(s.stream, s.consumer_group, "-", "+", 10)
    assert int(row["time_since_delivered"]) >= 60_000
    assert row["times_delivered"] == 2
    assert await streamops.touch(r, s.stream, s.consumer_group, "other", [entry.id]) == {entry.id}
    [row] = await r.xpending_range(s.stream, s.consumer_group, "-", "+", 10)
    assert int(row["time_since_delivered"]) < 60_000
    assert row["times_delivered"] == 2


@pytest.mark.asyncio
async def test_a_stopping_worker_releases_its_waiting_entries_for_their_retry_time(kit: Kit):
    """Entries waiting for a retry when their worker stops are left idle as if their retry time
    had come (claim threshold less the time left): claimable by another worker then, not
    sooner, and not only after a whole claim threshold."""
    s = kit.with_settings(
        SHOPIPE_POD_NAME="w1",
        SHOPIPE_CLAIM_IDLE_SECONDS="60",
        SHOPIPE_RETRY_BASE_SECONDS="20",
        SHOPIPE_RETRY_MAX_SECONDS="30",
    )
    c1 = kit.consumer("w1", s)
    run1 = asyncio.create_task(c1.run())
    body = json.dumps({"fail": "always"}).encode()
    failing = [(headers("test/ping", f"w{i}"), body) for i in range(40)]
    try:
        for i in range(0, 40, 4):  # ten segments
            await kit.produce(failing[i : i + 4])

        async def all_waiting() -> bool:
            return len(c1.waiting) == 10

        await wait_for(all_waiting, timeout=30, what="every segment failed once and waits")
    finally:
        c1.stop()
        await asyncio.wait_for(run1, timeout=20)
    r = await kit.master.get()
    rows: Any = await r.xpending_range(
        kit.settings.stream, kit.settings.consumer_group, "-", "+", 100
    )
    assert len(rows) == 10
    for row in rows:
        idle = int(row["time_since_delivered"])
        # Released: idle for the threshold less at most the longest retry (and a second of
        # rounding), never past the threshold itself (a second of slack for the clock).
        assert 60_000 - 30_000 - 2_000 <= idle <= 60_000 + 1_000, idle
