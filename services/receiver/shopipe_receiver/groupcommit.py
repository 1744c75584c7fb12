"""Group commit: concurrent webhooks share one segment PUT.

A request joins the segment being filled. That segment is written as soon as no write is in
flight, or when it is full (records or bytes), or when its first record has waited the maximum.
So at low load a webhook waits for exactly one PUT, and under load the PUTs per webhook fall far
below 1 while every request still gets its answer only after its own segment is durable. A failed
PUT fails exactly the requests in that segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from shopipe import segment
from shopipe.errors import StorageUnavailable
from shopipe.logs import get_logger
from shopipe.segment import Record

from shopipe_receiver import metrics

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
        on_written: OnWritten | None = None,
    ) -> None:
        self._put = put
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_wait = max_wait
        self._on_written = on_written
        self._open: _Batch | None = None
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.puts = 0  # segment PUTs attempted (tests and benchmarks read it)
        self.records = 0  # records submitted

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, headers: Mapping[str, str], body: bytes, received_at: float) -> Stored:
        """Add one webhook; returns once its segment is stored, or raises the PUT's error."""
        size = len(body) + _RECORD_OVERHEAD + sum(len(k) + len(v) + 8 for k, v in headers.items())
        batch = self._open
        if batch is not None and batch.records and batch.size + size > self.max_bytes:
            self._flush(batch)
            batch = None
        if batch is None:
            batch = self._open = _Batch(segment.new_name(received_at))
        index = len(batch.records)
        batch.records.append(
            Record(segment.record_id(batch.name, index), received_at, dict(headers), body)
        )
        waiter: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        batch.size += size
        self.records += 1
        if (
            self._in_flight == 0
            or len(batch.records) >= self.max_records
            or batch.size >= self.max_bytes
            or self.max_wait <= 0
        ):
            self._flush(batch)
        elif batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(self.max_wait, self._expire, batch)
        return await waiter

    def _expire(self, batch: _Batch) -> None:
        if self._open is batch:
            self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        self._in_flight += 1
        self.puts += 1
        task = asyncio.create_task(self._write(batch), name=f"segment:{batch.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: _Batch) -> None:
        key = segment.incoming_key(batch.name)
        n = len(batch.records)
        try:
            try:
                data = segment.encode(batch.records)
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
            metrics.STORAGE_SECONDS.observe(time.perf_counter() - start)
            metrics.SEGMENTS.inc()
            metrics.SEGMENT_RECORDS.observe(n)
            for rec, w in zip(batch.records, batch.waiters, strict=True):
                if not w.done():
                    w.set_result(Stored(key, rec.id, n))
            if self._on_written is not None:
                self._on_written(key, n)
        finally:
            for w in batch.waiters:
                if not w.done():  # cancelled mid-write (shutdown): never leave a request hanging
                    w.set_exception(StorageUnavailable("segment write cancelled"))
            self._in_flight -= 1
            # What gathered during this write goes out now: the heart of group commit.
            if self._in_flight == 0 and self._open is not None:
                self._flush(self._open)

    async def close(self, grace: float = 10.0) -> None:
        """Write what is open and wait (bounded) for every write in flight."""
        if self._open is not None:
            self._flush(self._open)
        pending = set(self._tasks)
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
