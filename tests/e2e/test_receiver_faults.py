"""Receiver fault drills on a private stack: Redis master killed, S3 stopped mid-load.

The bucket is the source of truth: a 200 always means the webhook's segment is in it, whatever
Redis does; while S3 is down the answer is 503 and nothing is half-written.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.config import ReceiverSettings
from shopipe.metrics import REGISTRY
from shopipe.sentinel import MasterClient, RedisTarget
from shopipe_devstack import Stack
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import Running, running

from tests.receiver_kit import receiver_settings

pytestmark = pytest.mark.e2e

SECRET = "faults-secret"


def failures() -> float:
    return REGISTRY.get_sample_value("shopipe_receiver_announce_failures_total") or 0.0


async def send(c: httpx.AsyncClient, url: str, i: int) -> tuple[int, str, str]:
    """(status, record id or "", webhook id)."""
    body = b'{"n": %d}' % i
    headers = signed_headers("orders/create", body, SECRET)
    try:
        resp = await c.post(url, content=body, headers=headers)
    except httpx.HTTPError:
        return 0, "", headers["X-Shopify-Webhook-Id"]
    rid = resp.json().get("id", "") if resp.status_code == 200 else ""
    return resp.status_code, rid, headers["X-Shopify-Webhook-Id"]


async def burst(r: Running, n: int) -> list[tuple[int, str, str]]:
    async with httpx.AsyncClient(timeout=15) as c:
        return await asyncio.gather(*(send(c, r.url, i) for i in range(n)))


async def until(cond: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def records_in_bucket(settings: ReceiverSettings) -> dict[str, segment.Record]:
    """Every record under incoming/; decoding fails the test if any object is damaged."""
    bucket = Buffer(settings)
    try:
        out: dict[str, segment.Record] = {}
        for obj in await bucket.list(segment.INCOMING):
            for rec in segment.decode(await bucket.get(obj.key)):
                out[rec.id] = rec
        return out
    finally:
        bucket.close()


async def announced_keys(settings: ReceiverSettings) -> set[str]:
    client = MasterClient(RedisTarget.from_settings(settings), service="test", pod="reader")
    try:
        entries = await client.call(lambda r: r.xrange(settings.stream), deadline=20)
    finally:
        await client.close()
    rows: list[Any] = list(entries or [])
    return {fields[b"key"].decode() for _id, fields in rows}


@pytest.mark.asyncio
async def test_killed_redis_master_still_gets_200_and_durable_segments(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    settings = receiver_settings(stack, SECRET)
    async with running(settings) as r:
        assert [s for s, _, _ in await burst(r, 5)] == [200] * 5
        old = stack.current_master()
        await asyncio.to_thread(stack.kill_redis, old)

        during = await burst(r, 30)
        assert [s for s, _, _ in during] == [200] * 30
        await asyncio.to_thread(stack.wait_failover, old)
        await until(lambda: r.receiver.pending_announces == 0, "announces to settle")
        keys = {segment.incoming_key(segment.parse_record_id(rid)[0]) for _, rid, _ in during}
        failed_before = failures()
        missing = keys - await announced_keys(settings)

        # No master at all: kill the promoted one and the last replica too (three nodes, as
        # the chart runs). Still 200, each segment counted.
        for node in stack.info.redis_nodes:
            if node != old:
                await asyncio.to_thread(stack.kill_redis, node)
        after = await burst(r, 10)
        assert [s for s, _, _ in after] == [200] * 10
        await until(lambda: r.receiver.pending_announces == 0, "announces to give up")
        unannounced = {segment.incoming_key(segment.parse_record_id(i)[0]) for _, i, _ in after}
        assert failures() - failed_before >= len(unannounced)
    # Announcements lost while the master was down were counted (the sweeper recovers them).
    assert failed_before >= len(missing)
    stored = await records_in_bucket(settings)
    for _, rid, _ in during + after:
        assert rid in stored


@pytest.mark.asyncio
async def test_s3_stopped_mid_load_gives_503_then_200_and_nothing_half_written(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    settings = receiver_settings(stack, SECRET)
    results: list[tuple[int, str, str]] = []
    stop = asyncio.Event()

    async def load(r: Running) -> None:
        async with httpx.AsyncClient(timeout=15) as c:
            i = 0
            while not stop.is_set() and i < 100_000:  # bounded
                results.extend(await asyncio.gather(*(send(c, r.url, i + k) for k in range(4))))
                i += 4

    async with running(settings) as r:
        task = asyncio.create_task(load(r))
        try:
            await until(lambda: sum(s == 200 for s, _, _ in results) >= 20, "200s before")
            await asyncio.to_thread(stack.stop_s3)
            # One batch of 4 may have been sent before S3 was gone: skip it.
            down = len(results) + 4
            await until(lambda: sum(s == 503 for s, _, _ in results[down:]) >= 10, "503s")
            up = len(results)
            await asyncio.to_thread(stack.start_s3)
            mark = len(results)
            await until(lambda: sum(s == 200 for s, _, _ in results[mark:]) >= 20, "200s after")
        finally:
            stop.set()
            await task
    statuses = Counter(s for s, _, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    stored = await records_in_bucket(settings)  # raises if any object is damaged
    acked = [rid for s, rid, _ in results if s == 200]
    assert all(rid in stored for rid in acked)
    stored_hooks = {rec.headers["X-Shopify-Webhook-Id"] for rec in stored.values()}
    refused = {hook for s, _, hook in results[down:up] if s == 503}
    assert len(refused) >= 10
    # With the store down, a 503'd webhook was not written at all (not even partly).
    assert not refused & stored_hooks
