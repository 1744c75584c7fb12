"""The sweeper at scale, against the real stack: it walks incoming/ page by page from a cursor
kept in Redis, holds one page at a time, renews its lock per page and stops when it is lost.

The store is the real one, wrapped to record each listing (its page size, its StartAfter and
how many keys it returned): what the sweeper holds at once is the page it was given.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from shopipe.buffer import Buffer, ObjectInfo
from shopipe.config import WorkerSettings
from shopipe.metrics import REGISTRY
from shopipe_worker import sweeper as sweeper_module
from shopipe_worker.sweeper import Sweeper

from tests.worker_kit import Kit, headers, kit

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest

PAGE = 20
Listing = tuple[int | None, str, list[str]]  # page size asked, StartAfter, keys returned


class RecordingStore(Buffer):
    """The real bucket; every ``list`` call is recorded, and ``after_list`` (if set) runs
    after each one, given its number (1-based)."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.calls: builtins.list[Listing] = []
        self.after_list: Callable[[int], Awaitable[None]] | None = None

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str = ""
    ) -> list[ObjectInfo]:
        got = await super().list(prefix, limit=limit, start_after=start_after)
        self.calls.append((limit, start_after, [o.key for o in got]))
        if self.after_list is not None:
            await self.after_list(len(self.calls))
        return got

    def pages(self) -> builtins.list[Listing]:
        """The sweeping listings (not the one-key look at the oldest segment)."""
        return [c for c in self.calls if c[0] != 1]


@pytest_asyncio.fixture
async def store(kit: Kit) -> AsyncIterator[RecordingStore]:
    s = RecordingStore(kit.settings)
    try:
        yield s
    finally:
        s.close()


def sweeper(kit: Kit, store: Buffer, **kw: Any) -> Sweeper:
    s = kit.with_settings(SHOPIPE_SWEEP_PAGE_KEYS=str(PAGE), SHOPIPE_SWEEP_GRACE_SECONDS="60")
    return Sweeper(s, kit.master, store, **kw)


async def old_segments(kit: Kit, n: int, tag: str) -> list[str]:
    """``n`` segments received 10 minutes ago, one millisecond apart, in key order."""
    base = time.time() - 600
    keys: list[str] = []
    for start in range(0, n, 25):
        keys += await asyncio.gather(
            *(
                kit.put([(headers("test/ping", f"{tag}-{i}"), b"{}")], at=base + i / 1000)
                for i in range(start, min(n, start + 25))
            )
        )
    return sorted(keys)


async def announced(kit: Kit) -> Counter[str]:
    r = await kit.master.get()
    rows: Any = await r.xrange(kit.settings.stream)
    return Counter(f[b"key"].decode() for _, f in rows)


async def cursor(kit: Kit) -> dict[Any, Any]:
    r = await kit.master.get()
    got: dict[Any, Any] = await r.hgetall(kit.keys.sweeper_cursor())
    return got


@pytest.mark.asyncio
async def test_many_segments_over_several_pages_are_all_announced_once(
    kit: Kit, store: RecordingStore
):
    lost = await old_segments(kit, 5 * PAGE + 7, "lost")
    covered = lost[10:13]  # still announced: left alone
    for key in covered:
        await kit.announce(key)
    young = [await kit.put([(headers("test/ping", f"young-{i}"), b"{}")]) for i in range(3)]

    assert await sweeper(kit, store).sweep_once() == len(lost) - len(covered)

    assert await announced(kit) == Counter(lost)  # each old segment once, no young one
    assert not set(young) & set(await announced(kit))
    pages = store.pages()
    # The first page is listed again once the entries covering segments were read: a segment
    # finished in between would look lost.
    assert pages[0] == pages[1]
    pages = pages[1:]
    assert len(pages) == 6  # 107 old keys, then the young ones end the pass
    # One page held at a time: each listing asked for a page and got at most that many keys,
    # and the next one started after the last key of the previous.
    assert all(limit == PAGE and len(keys) <= PAGE for limit, _, keys in pages)
    assert [after for _, after, _ in pages] == ["", *(keys[-1] for _, _, keys in pages[:-1])]
    assert not await cursor(kit)  # the pass ended: the next round starts over
    assert REGISTRY.get_sample_value("shopipe_backlog_incoming_objects") == len(lost) + 3
    assert await sweeper(kit, store).sweep_once() == 0  # all covered now


@pytest.mark.asyncio
async def test_a_sweep_that_loses_its_lock_stops_and_the_next_continues_from_the_cursor(
    kit: Kit, store: RecordingStore
):
    lost = await old_segments(kit, 3 * PAGE, "lock")
    lock = kit.keys.sweeper_lock()

    async def steal(n: int) -> None:
        if n == 2:  # the lock expired during the first page and another worker took it
            r = await kit.master.get()
            await r.set(lock, "another-worker", px=60_000)

    store.after_list = steal
    assert await sweeper(kit, store).sweep_once() == PAGE  # the first page, then it stopped
    assert len(store.pages()) == 2  # the first page, listed again after reading the stream
    assert await announced(kit) == Counter(lost[:PAGE])
    r = await kit.master.get()
    assert await r.get(lock) == b"another-worker"  # not released by the one that lost it
    assert (await cursor(kit))[b"after"].decode() == lost[PAGE - 1]

    await r.delete(lock)
    store.after_list = None
    store.calls.clear()
    assert await sweeper(kit, store).sweep_once() == 2 * PAGE
    assert store.pages()[0][1] == lost[PAGE - 1]  # continued after the cursor
    assert await announced(kit) == Counter(lost)
    assert not await r.exists(lock)  # released at the end


@pytest.mark.asyncio
async def test_a_round_adds_no_more_than_the_backlog_cap_and_the_next_round_continues(
    kit: Kit, store: RecordingStore
):
    lost = await old_segments(kit, 50, "cap")
    s = kit.settings
    r = await kit.master.get()
    assert await sweeper(kit, store, cap=30).sweep_once() == 30
    assert await announced(kit) == Counter(lost[:30])
    # Full: nothing more until the backlog goes down.
    assert await sweeper(kit, store, cap=30).sweep_once() == 0
    # Workers take the 30 (acknowledged, as if their segments were being finished).
    await r.xgroup_create(s.stream, s.consumer_group, id="0")
    taken: Any = await r.xreadgroup(s.consumer_group, "w", {s.stream: ">"}, count=100)
    await r.xack(s.stream, s.consumer_group, *[i for i, _ in taken[0][1]])
    # The next round starts where the last stopped: the first 30 are not announced again.
    assert await sweeper(kit, store, cap=30).sweep_once() == 20
    assert await announced(kit) == Counter(lost)


@pytest.mark.asyncio
async def test_the_backlog_is_read_in_chunks_up_to_the_cap(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sweeper_module, "CHUNK", 4)  # several chunks of each kind
    s = kit.settings
    r = await kit.master.get()
    keys = [f"incoming/k{i:02d}" for i in range(20)]
    for key in keys:
        await kit.announce(key)
    await r.xgroup_create(s.stream, s.consumer_group, id="0")
    await r.xreadgroup(s.consumer_group, "w", {s.stream: ">"}, count=9)  # 9 pending, 11 not
    got = await sweeper_module.covered_keys(r, s.stream, s.consumer_group, 100)
    assert got == set(keys)
    assert await sweeper_module.covered_keys(r, s.stream, s.consumer_group, 10) is None
