"""Finishing segments in batches (shopipe_worker.finisher) on the real stack: segments finished
together share one WAIT, one DeleteObjects and one XACK, and every one of them is removed and
acknowledged."""

from __future__ import annotations

import asyncio

import pytest
from shopipe import segment
from shopipe.config import WorkerSettings
from shopipe.metrics import REGISTRY
from shopipe.stream import ensure_group
from shopipe_worker import streamops
from shopipe_worker.finisher import Finisher

from tests.worker_kit import Kit, headers, kit

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest

BATCHES = "shopipe_worker_finish_batch_segments"


def finisher_of(kit: Kit, settings: WorkerSettings | None = None) -> Finisher:
    s = settings or kit.settings
    return Finisher(s, kit.store, lambda fn: kit.master.call(fn, deadline=10), kit.master)


def observed() -> tuple[float, float]:
    count = REGISTRY.get_sample_value(f"{BATCHES}_count") or 0.0
    total = REGISTRY.get_sample_value(f"{BATCHES}_sum") or 0.0
    return count, total


async def delivered(kit: Kit, n: int) -> list[tuple[str, str]]:
    """``n`` segments written and announced, then read by consumer ``kit``: pending."""
    s = kit.settings
    r = await kit.master.get()
    await ensure_group(r, s.stream, s.consumer_group)
    for i in range(n):
        await kit.produce([(headers("test/ping", f"w{i}"), b"{}")])
    entries = await streamops.read(r, s.stream, s.consumer_group, "kit", n, 100)
    assert len(entries) == n
    return [(e.id, e.key) for e in entries]


async def pending(kit: Kit) -> int:
    r = await kit.master.get()
    info = await r.xpending(kit.settings.stream, kit.settings.consumer_group)
    return int(info["pending"])


@pytest.mark.asyncio
async def test_segments_finished_together_share_one_batch(kit: Kit) -> None:
    work = await delivered(kit, 10)
    finisher = finisher_of(kit)
    before = observed()
    await asyncio.gather(*(finisher.finish(i, k) for i, k in work))
    count, total = observed()
    # The first goes out alone at once (nothing waits at low load); the nine that arrived while
    # it was in flight go out together.
    assert (count - before[0], total - before[1]) == (2, 10)
    assert await kit.store.list(segment.INCOMING) == []
    assert await pending(kit) == 0


@pytest.mark.asyncio
async def test_an_entry_without_object_is_only_acknowledged(kit: Kit) -> None:
    (entry_id, key), (other_id, _) = await delivered(kit, 2)
    finisher = finisher_of(kit)
    await finisher.finish(other_id, None)
    assert await pending(kit) == 1
    assert len(await kit.store.list(segment.INCOMING)) == 2  # nothing removed for it
    await finisher.finish(entry_id, key)
    assert await pending(kit) == 0
    assert not await kit.store.exists(key)
    await finisher.close(grace=1.0)


@pytest.mark.asyncio
async def test_archiving_moves_the_objects_under_processed(kit: Kit) -> None:
    work = await delivered(kit, 3)
    settings = kit.with_settings(SHOPIPE_ARCHIVE="true")
    finisher = finisher_of(kit, settings)
    await asyncio.gather(*(finisher.finish(i, k) for i, k in work))
    archived = {o.key for o in await kit.store.list(segment.PROCESSED)}
    assert archived == {segment.processed_key(segment.name_of(k)) for _, k in work}
    assert await kit.store.list(segment.INCOMING) == []
    assert await pending(kit) == 0
