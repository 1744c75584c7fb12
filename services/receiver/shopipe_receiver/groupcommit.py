"""Group commit: concurrent webhooks share one segment PUT.

A request joins the segment being filled. That segment is written as soon as no write is in
flight, or when it is full (records or bytes), or when its first record has waited the maximum.
So at low load a webhook waits for exactly one PUT, and under load the PUTs per webhook fall far
below 1 while every request still gets its answer only after its own segment is durable. A failed
PUT fails exactly the requests in that segment.

PUTs in flight are capped (``max_puts``): while the cap is reached, the open segment keeps
growing instead of starting a PUT, and a segment that fills up waits in line for a free slot.
A request that stops waiting (its answer deadline passed) before its segment's PUT started takes
its record out at once, body and budget bytes with it: under a stalled store the segments waiting
for a slot would otherwise keep every 503'd body until the store recovers, and memory would grow
with the length of the stall. A segment left empty is not written at all, so a store that
recovers is not first made to write what every sender was already told to retry.

``behind(wait)`` says when a record joining now cannot be durable within ``wait``: every slot is
taken, and the store is proven slower than that (every PUT in flight has run ``wait`` already,
or the last PUT to end failed or took ``wait``). The receiver then answers 503 at once instead
of holding the body until its deadline: under a slow or stalled store, memory stays flat. A PUT
still stuck from a stall does not keep it so once the store answers: only the youngest PUT in
flight counts, and ``recovered()`` (the receiver's readiness check saw the store answer)
forgets the last PUT's failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from shopipe import segment
from shopipe.errors import StorageUnavailable
from shopipe.logs import get_logger
from shopipe.segment import Record

from shopipe_receiver import metrics
from shopipe_receiver.budget import BodyBudget

log = get_logger(__name__)

Put = Callable[[str, bytes], Awaitable[None]]
OnWritten = Callable[[str, int], None]

# Bytes a record adds besides its body: the JSON header line (id, time, length, braces).
_RECORD_OVERHEAD = 128


@dataclass(frozen=True)
class Stored:
    """Where a webhook was durably written."""

    key: str
    record_id: str
    records: int  # records in the same segment


@dataclass
class _Batch:
    name: str
    records: list[Record] = field(default_factory=list)
    waiters: list[asyncio.Future[Stored]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None
    due: bool = False  # its first record waited max_wait: it goes at the next free slot
    held: int = 0  # body bytes taken from the budget, given back when its PUT ends
    added: int = 0  # records ever added (record ids: a record that left keeps its index used)
    started: bool = False  # its PUT started: its records stay, whoever still waits


class GroupCommit:
    """Batches records into segments and writes them with ``put(key, data)``.

    ``on_written(key, n)`` runs after a segment is durable and its requests are answered (the
    announcement hook: it must not block).
    """

    def __init__(
        self,
        put: Put,
        *,
        max_records: int,
        max_bytes: int,
        max_wait: float,
        max_puts: int = 8,
        budget: BodyBudget | None = None,
        on_written: OnWritten | None = None,
    ) -> None:
        self._put = put
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_wait = max_wait
        self.max_puts = max_puts
        self._budget = budget
        self._on_written = on_written
        self._open: _Batch | None = None
        self._full: deque[_Batch] = deque()  # sealed segments waiting for a PUT slot
        # Segment name -> monotonic start of its PUT, for each PUT in flight (their count too).
        self._put_started: dict[str, float] = {}
        self._last_put: tuple[float, bool] | None = None  # (seconds, succeeded) of the last PUT
        self.peak_in_flight = 0  # highest PUTs in flight at once (status, tests)
        self._tasks: set[asyncio.Task[None]] = set()
        self.puts = 0  # segment PUTs attempted (tests and benchmarks read it)
        self.records = 0  # records submitted

    @property
    def in_flight(self) -> int:
        return len(self._put_started)

    @property
    def waiting(self) -> int:
        """Segments with records that wait for a PUT slot (the open one included)."""
        return len(self._full) + (1 if self._open is not None else 0)

    @property
    def saturated(self) -> bool:
        """Every PUT slot is taken, or segments wait for one."""
        return self.in_flight >= self.max_puts or bool(self._full)

    def behind(self, wait: float) -> bool:
        """A record joining now would wait for a slot, then for a PUT at the store's present
        speed: True when that cannot end within ``wait`` seconds. Only while every slot is
        taken, so a free slot always lets a record through (the probe that sees the store
        recover)."""
        if not self.saturated:
            return False
        if self._put_started and time.monotonic() - max(self._put_started.values()) >= wait:
            return True  # even the youngest PUT in flight has run that long: a stall
        last = self._last_put
        return last is not None and (not last[1] or last[0] >= wait)

    def recovered(self) -> None:
        """The store answered again (a readiness ping): the last PUT's failure or slowness no
        longer says what a new PUT will do."""
        self._last_put = None

    async def submit(
        self, headers: Mapping[str, str], body: bytes, received_at: float, *, held: int = 0
    ) -> Stored:
        """Add one webhook; returns once its segment is stored, or raises the PUT's error.

        ``held`` body bytes taken from the budget pass to the segment, which gives them back
        when its PUT ends (also when the caller stopped waiting)."""
        size = len(body) + _RECORD_OVERHEAD + sum(len(k) + len(v) + 8 for k, v in headers.items())
        batch = self._open
        if batch is not None and batch.records and batch.size + size > self.max_bytes:
            self._seal(batch)
            batch = None
        if batch is None:
            batch = self._open = _Batch(segment.new_name(received_at))
        index, batch.added = batch.added, batch.added + 1
        batch.records.append(
            Record(segment.record_id(batch.name, index), received_at, dict(headers), body)
        )
        waiter: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        batch.size += size
        batch.held += held
        waiter.add_done_callback(lambda w: self._left(batch, w, size, held))
        self.records += 1
        if len(batch.records) >= self.max_records or batch.size >= self.max_bytes:
            self._seal(batch)
        elif not self._put_started or self.max_wait <= 0:
            batch.due = True
            self._next()
        elif batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(self.max_wait, self._expire, batch)
        return await waiter

    def _left(self, batch: _Batch, waiter: asyncio.Future[Stored], size: int, held: int) -> None:
        """A request stopped waiting (cancelled: its deadline passed) before its segment's PUT
        started: its record leaves the segment now, and its bytes go back to the budget."""
        if batch.started or not waiter.cancelled():
            return
        # Linear in the segment's records (at most max_records), once per request that left.
        i = next((i for i, w in enumerate(batch.waiters) if w is waiter), None)
        if i is None:
            return
        del batch.records[i], batch.waiters[i]
        batch.size -= size
        if self._budget is not None and held:
            batch.held -= held
            self._budget.give(held)

    def _expire(self, batch: _Batch) -> None:
        batch.timer = None
        batch.due = True
        self._next()

    def _seal(self, batch: _Batch) -> None:
        """``batch`` takes no more records: it is written at once, or waits for a slot."""
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        self._full.append(batch)
        self._next()

    def _next(self) -> None:
        """Start PUTs while there is a free slot: sealed segments first (oldest first), then
        the open one once it is due. At the cap, nothing starts: the open segment grows."""
        while self.in_flight < self.max_puts:
            if self._full:
                self._start(self._full.popleft())
            elif self._open is not None and (self._open.due or not self._put_started):
                batch, self._open = self._open, None
                if batch.timer is not None:
                    batch.timer.cancel()
                    batch.timer = None
                self._start(batch)
            else:
                return

    def _start(self, batch: _Batch) -> None:
        batch.started = True
        # Records whose request stopped waiting just now (their callback has not run yet) are
        # left out too; their bytes go back when the segment's PUT ends.
        kept = [(r, w) for r, w in zip(batch.records, batch.waiters, strict=True) if not w.done()]
        if len(kept) < len(batch.records):
            batch.records = [r for r, _ in kept]
            batch.waiters = [w for _, w in kept]
        if not batch.records:
            self._release(batch)
            return
        self._put_started[batch.name] = time.monotonic()
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.puts += 1
        task = asyncio.create_task(self._write(batch), name=f"segment:{batch.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, batch: _Batch) -> None:
        if self._budget is not None and batch.held:
            self._budget.give(batch.held)
            batch.held = 0

    async def _write(self, batch: _Batch) -> None:
        key = segment.incoming_key(batch.name)
        n = len(batch.records)
        ids = [r.id for r in batch.records]
        started = self._put_started[batch.name]
        ok = False
        try:
            try:
                data = segment.encode(batch.records)
                # The encoded segment holds the bodies from now on: the records let go of theirs,
                # so a body whose request was already answered (503 at its deadline) is not
                # held twice while a slow or stalled PUT lasts.
                batch.records.clear()
                start = time.perf_counter()
                await self._put(key, data)
            except Exception as e:
                # Every request of this segment (and only those) is answered 503.
                metrics.STORAGE_FAILURES.inc()
                log.warning(
                    "segment write failed",
                    extra={"key": key, "records": n, "error": f"{type(e).__name__}: {e}"},
                )
                for w in batch.waiters:
                    if not w.done():
                        w.set_exception(e)
                return
            ok = True
            metrics.STORAGE_SECONDS.observe(time.perf_counter() - start)
            metrics.SEGMENTS.inc()
            metrics.SEGMENT_RECORDS.observe(n)
            for record_id, w in zip(ids, batch.waiters, strict=True):
                if not w.done():
                    w.set_result(Stored(key, record_id, n))
            if self._on_written is not None:
                self._on_written(key, n)
        finally:
            for w in batch.waiters:
                if not w.done():  # cancelled mid-write (shutdown): never leave a request hanging
                    w.set_exception(StorageUnavailable("segment write cancelled"))
            self._release(batch)
            del self._put_started[batch.name]
            self._last_put = (time.monotonic() - started, ok)
            # What gathered during this write goes out now: the heart of group commit.
            self._next()

    async def close(self, grace: float = 10.0) -> None:
        """Write what is open and wait (bounded) for every write in flight or in line."""
        if self._open is not None:
            self._seal(self._open)
        deadline = time.monotonic() + grace
        # Bounded: each turn waits for at least one write to end, and time is bounded too.
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
        for batch in self._full:  # never started: their requests get a 503
            for w in batch.waiters:
                if not w.done():
                    w.set_exception(StorageUnavailable("receiver stopping"))
            self._release(batch)
        self._full.clear()
        late = set(self._tasks)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
