"""Group commit: batching rules, each request answered after its own segment, failures scoped.

The store here is an in-memory ``put`` with a gate, so the test decides when a write finishes;
the real bucket is exercised in tests/integration/test_receiver_concurrency.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from shopipe import segment
from shopipe.errors import StorageUnavailable
from shopipe_receiver.budget import BodyBudget
from shopipe_receiver.groupcommit import GroupCommit, Stored

pytestmark = pytest.mark.unit


class Store:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: set[int] = set()  # indexes of calls that fail

    async def put(self, key: str, data: bytes) -> None:
        index = len(self.calls)
        self.calls.append(key)
        await self.gate.wait()
        if index in self.fail:
            raise StorageUnavailable("s3 put: SlowDown")
        self.objects[key] = data


async def until(cond, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def submit(gc: GroupCommit, i: int, size: int = 10) -> asyncio.Task[Stored]:
    body = b"%d:" % i + b"x" * size
    return asyncio.ensure_future(gc.submit({"X-Shopify-Topic": "orders/create"}, body, time.time()))


@pytest.mark.asyncio
async def test_lone_request_is_written_at_once_without_waiting() -> None:
    store = Store()
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=3600)
    stored = await asyncio.wait_for(submit(gc, 0), 5)
    # max_wait is an hour: returning at all proves no timer was waited on.
    assert store.calls == [stored.key]
    assert stored.records == 1
    (rec,) = segment.decode(store.objects[stored.key])
    assert rec.id == stored.record_id == segment.name_of(stored.key) + ":0"


@pytest.mark.asyncio
async def test_requests_arriving_during_a_write_share_the_next_segment() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=1000, max_bytes=1 << 20, max_wait=3600)
    first = submit(gc, 0)
    await until(lambda: len(store.calls) == 1, "first put")
    rest = [submit(gc, i) for i in range(1, 51)]
    await asyncio.sleep(0)
    assert len(store.calls) == 1  # all 50 wait for the write in flight
    assert not any(t.done() for t in rest)
    store.gate.set()
    results = await asyncio.gather(first, *rest)
    assert len(store.calls) == 2
    assert {r.key for r in results[1:]} == {store.calls[1]}
    recs = segment.decode(store.objects[store.calls[1]])
    assert [r.id for r in recs] == [r.record_id for r in results[1:]]
    assert [r.body for r in recs] == [b"%d:" % i + b"x" * 10 for i in range(1, 51)]


@pytest.mark.asyncio
async def test_full_segment_is_written_without_waiting_for_the_write_in_flight() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=5, max_bytes=1 << 20, max_wait=3600)
    tasks = [submit(gc, 0)]
    await until(lambda: len(store.calls) == 1, "first put")
    tasks += [submit(gc, i) for i in range(1, 12)]
    await until(lambda: len(store.calls) == 3, "two full segments")
    store.gate.set()
    results = await asyncio.gather(*tasks)
    sizes = sorted(len(segment.decode(store.objects[k])) for k in store.calls)
    assert sizes == [1, 1, 5, 5]
    assert len({r.record_id for r in results}) == 12


@pytest.mark.asyncio
async def test_segment_is_cut_by_bytes() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=1000, max_bytes=4096, max_wait=3600)
    tasks = [submit(gc, 0)]
    await until(lambda: len(store.calls) == 1, "first put")
    tasks += [submit(gc, i, size=1500) for i in range(1, 7)]
    store.gate.set()
    await asyncio.gather(*tasks)
    for key in store.calls:
        assert len(store.objects[key]) <= 4096 + 1600  # never more than one record over
    assert len(store.calls) >= 3


@pytest.mark.asyncio
async def test_open_segment_is_written_after_max_wait_even_with_a_write_in_flight() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=1000, max_bytes=1 << 20, max_wait=0.01)
    first = submit(gc, 0)
    await until(lambda: len(store.calls) == 1, "first put")
    second = submit(gc, 1)
    await until(lambda: len(store.calls) == 2, "timer flush while first put is stuck")
    store.gate.set()
    await asyncio.gather(first, second)


@pytest.mark.asyncio
async def test_failed_put_fails_exactly_its_own_requests() -> None:
    store = Store()
    store.gate.clear()
    store.fail = {1}
    gc = GroupCommit(store.put, max_records=10, max_bytes=1 << 20, max_wait=3600)
    a = submit(gc, 0)
    await until(lambda: len(store.calls) == 1, "first put")
    doomed = [submit(gc, i) for i in range(1, 11)]  # fills segment 2 (fails)
    await until(lambda: len(store.calls) == 2, "second put")
    later = [submit(gc, i) for i in range(11, 15)]  # segment 3
    store.gate.set()
    results = await asyncio.gather(a, *doomed, *later, return_exceptions=True)
    assert isinstance(results[0], Stored)
    assert all(isinstance(r, StorageUnavailable) for r in results[1:11])
    assert all(isinstance(r, Stored) for r in results[11:])
    assert store.calls[1] not in store.objects
    assert len(store.objects) == 2


@pytest.mark.asyncio
async def test_cancelled_request_does_not_disturb_its_segment() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=3600)
    first = submit(gc, 0)
    await until(lambda: len(store.calls) == 1, "first put")
    gone, kept = submit(gc, 1), submit(gc, 2)
    await asyncio.sleep(0)
    gone.cancel()
    store.gate.set()
    await first
    stored = await kept
    # Its segment had not started: the record that nobody waits for is left out, the other
    # keeps its id (ids may skip an index).
    (rec,) = segment.decode(store.objects[stored.key])
    assert rec.id == stored.record_id
    assert rec.id.endswith(":1")


@pytest.mark.asyncio
async def test_request_cancelled_during_its_put_is_still_written() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=2, max_bytes=1 << 20, max_wait=3600)
    first = submit(gc, 0)
    gone, kept = submit(gc, 1), submit(gc, 2)  # a full segment: its PUT starts at once
    await until(lambda: len(store.calls) == 2, "both puts")
    gone.cancel()
    store.gate.set()
    await first
    stored = await kept
    # Already on its way: Shopify retries the cancelled one and the done-markers dedup it.
    assert len(segment.decode(store.objects[stored.key])) == 2


@pytest.mark.asyncio
async def test_close_writes_the_open_segment() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=3600)
    tasks = [submit(gc, 0)]
    await until(lambda: len(store.calls) == 1, "first put")
    tasks.append(submit(gc, 1))
    await asyncio.sleep(0)
    store.gate.set()
    await gc.close(grace=5)
    assert all(isinstance(r, Stored) for r in await asyncio.gather(*tasks))
    assert len(store.objects) == 2


@pytest.mark.asyncio
async def test_at_the_put_cap_the_open_segment_grows_instead_of_a_new_put() -> None:
    store = Store()
    store.gate.clear()
    # max_wait 0: without the cap, every webhook would start a PUT of its own.
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=0, max_puts=2)
    tasks = [submit(gc, i) for i in range(10)]
    await until(lambda: gc.records == 10, "all submitted")
    assert len(store.calls) == 2
    assert gc.in_flight == 2
    assert gc.waiting == 1
    assert gc.saturated
    store.gate.set()
    stored = await asyncio.gather(*tasks)
    # The eight that came at the cap went out together, in the segment that grew meanwhile.
    assert len(store.calls) == 3
    assert sorted(s.records for s in stored) == [1, 1] + [8] * 8
    assert gc.peak_in_flight == 2
    assert not gc.saturated


@pytest.mark.asyncio
async def test_behind_only_while_every_slot_is_held_longer_than_the_wait() -> None:
    """Issue 15 §1: the receiver answers 503 at once while ``behind``; a free slot always lets a
    record through, so the store's recovery is seen."""
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=0, max_puts=2)
    first = [submit(gc, i) for i in range(2)]
    await until(lambda: gc.in_flight == 2, "both slots taken")
    assert gc.saturated
    assert not gc.behind(3600)  # slots taken, but by PUTs younger than the wait
    await until(lambda: gc.behind(0.05), "a PUT in flight for longer than the wait")
    store.gate.set()
    await asyncio.gather(*first)
    assert gc.in_flight == 0  # both slots free again
    assert not gc.behind(0.0)  # a free slot: never behind, whatever the last PUT took

    # Each PUT now ends when the test says, failing or not.
    gates: list[asyncio.Event] = []
    failing: set[int] = set()

    async def put(key: str, data: bytes) -> None:
        index = len(gates)
        gates.append(asyncio.Event())
        await gates[index].wait()
        if index in failing:
            raise StorageUnavailable("s3 put: SlowDown")

    gc = GroupCommit(put, max_records=100, max_bytes=1 << 20, max_wait=0, max_puts=2)
    failing.add(0)
    tasks = [submit(gc, i) for i in range(3)]  # PUTs 0 and 1; the third waits, open
    await until(lambda: len(gates) == 2, "both slots taken")
    gates[0].set()  # fails: its slot goes to the waiting segment (PUT 2)
    with pytest.raises(StorageUnavailable):
        await tasks[0]
    await until(lambda: len(gates) == 3, "the waiting segment took the freed slot")
    assert gc.saturated
    assert gc.behind(3600)  # every slot taken, and the last PUT to end failed, however fast
    tasks.append(submit(gc, 3))  # waits, open, for the next free slot
    gates[1].set()  # succeeds, quickly: its slot goes to PUT 3
    await tasks[1]
    await until(lambda: len(gates) == 4, "the next segment took the freed slot")
    assert gc.saturated
    assert not gc.behind(3600)  # slots all taken again, but the last PUT to end was healthy
    gates[2].set()
    gates[3].set()
    await asyncio.gather(*tasks[2:])

    # A PUT stuck from a stall, beside a fresh one once the store answers again: not behind.
    gates.clear()
    failing.clear()
    gc = GroupCommit(put, max_records=100, max_bytes=1 << 20, max_wait=0, max_puts=2)
    failing.add(1)
    stuck, doomed = submit(gc, 10), submit(gc, 11)  # PUTs 0 (held to the end) and 1
    await until(lambda: gc.behind(0.5), "both PUTs in flight longer than the wait")
    gates[1].set()
    with pytest.raises(StorageUnavailable):
        await doomed
    fresh = submit(gc, 12)  # PUT 2 takes the freed slot, beside the stuck one
    await until(lambda: len(gates) == 3, "a new PUT beside the stuck one")
    assert gc.behind(3600)  # the last PUT to end failed
    gc.recovered()  # the receiver's readiness check saw the store answer
    assert not gc.behind(0.5)  # the stuck PUT has run longer, the youngest has not
    gates[2].set()
    gates[0].set()
    await asyncio.gather(stuck, fresh)


@pytest.mark.asyncio
async def test_full_segments_wait_in_line_at_the_cap() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=2, max_bytes=1 << 20, max_wait=0, max_puts=1)
    tasks = [submit(gc, i) for i in range(7)]
    await until(lambda: gc.records == 7, "all submitted")
    assert len(store.calls) == 1
    store.gate.set()
    stored = await asyncio.gather(*tasks)
    assert gc.peak_in_flight == 1
    assert all(s.records <= 2 for s in stored)  # sealed segments never grew past full


@pytest.mark.asyncio
async def test_segment_of_requests_that_all_stopped_waiting_is_not_written() -> None:
    store = Store()
    store.gate.clear()
    budget = BodyBudget(1 << 20)
    gc = GroupCommit(
        store.put, max_records=100, max_bytes=1 << 20, max_wait=0, max_puts=1, budget=budget
    )
    first = submit(gc, 0)
    await until(lambda: len(store.calls) == 1, "first put")
    assert budget.take(300)
    late = [
        asyncio.ensure_future(gc.submit({}, b"x" * 100, time.time(), held=100)) for _ in range(3)
    ]
    await until(lambda: gc.records == 4, "late ones joined")
    for t in late:
        t.cancel()  # their deadline passed: each was answered 503
    # Their bodies leave at once, while the store is still stalled: memory does not grow with
    # the length of a stall.
    await until(lambda: budget.held == 0, "bytes given back before the store recovers")
    assert len(store.calls) == 1
    store.gate.set()
    await first
    assert len(store.calls) == 1
    assert gc.puts == 1
    assert gc.waiting == 0


@pytest.mark.asyncio
async def test_bytes_of_a_request_cancelled_mid_put_are_given_back_when_the_put_ends() -> None:
    store = Store()
    store.gate.clear()
    budget = BodyBudget(1000)
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=0, budget=budget)
    assert budget.take(100)
    task = asyncio.ensure_future(gc.submit({}, b"x" * 100, time.time(), held=100))
    await until(lambda: len(store.calls) == 1, "the put")
    task.cancel()
    await asyncio.sleep(0)
    assert budget.held == 100  # the PUT still holds the body
    assert not budget.take(901)
    store.gate.set()
    await until(lambda: budget.held == 0, "bytes given back")
    assert budget.peak == 100


@pytest.mark.asyncio
async def test_a_record_that_left_its_segment_keeps_its_index_used() -> None:
    store = Store()
    store.gate.clear()
    gc = GroupCommit(store.put, max_records=100, max_bytes=1 << 20, max_wait=0, max_puts=1)
    first = submit(gc, 0)
    await until(lambda: len(store.calls) == 1, "first put")
    gone = submit(gc, 1)
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)  # it left the open segment
    kept = submit(gc, 2)
    store.gate.set()
    await first
    stored = await kept
    (rec,) = segment.decode(store.objects[stored.key])
    assert rec.id == stored.record_id
    assert rec.id.endswith(":1")  # not ":0", the id of the record that left
