"""Finishing settled segments in batches: one WAIT, one DeleteObjects and one XACK for many.

A segment whose records are all done or dead-lettered is finished in three steps:
1. durability: a write on this connection, then ``WAIT 1`` (skipped while the master has no
   replica). The done-markers must be on a replica before the object goes, or a failover could
   forget them while the object is gone too;
2. its object is removed (or moved under ``processed/`` when archiving);
3. its stream entry is acknowledged.

One segment at a time, that is a DELETE (milliseconds of boto3 CPU and a request to the store)
and two Redis round trips per segment. Batched like the receiver's group commit, it is one of
each per batch: a batch goes out as soon as none is in flight, and what arrives meanwhile waits
for the next, so nothing waits at low load. A failure fails exactly the segments it concerns:
their entries stay pending and are retried (the retry finds the records done).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import WorkerSettings
from shopipe.errors import TransientError
from shopipe.logs import get_logger

from shopipe_worker import metrics as m
from shopipe_worker import streamops as ops

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)
T = TypeVar("T")
Call = Callable[[Callable[["Redis"], Awaitable[Any]]], Awaitable[Any]]

MAX_BATCH = 1000  # DeleteObjects takes at most 1000 keys
REPLICAS_TTL = 5.0  # seconds a ROLE answer is trusted (a failover asks again at once)


@dataclass
class _Item:
    entry_id: str
    key: str | None  # None: nothing to remove (missing, unparseable), only the XACK
    waiter: asyncio.Future[None]


class Finisher:
    """``await finish(entry_id, key)`` removes ``key`` and acknowledges ``entry_id``."""

    def __init__(self, settings: WorkerSettings, store: Buffer, call: Call) -> None:
        self.settings = settings
        self.store = store
        self.call = call
        self.stream = settings.stream
        self.group = settings.consumer_group
        self.me = settings.pod_name
        self._queue: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        self._replicas = 0
        self._replicas_at = -1e9

    async def finish(self, entry_id: str, key: str | None) -> None:
        """Returns once the object is gone and the entry acknowledged (an XACK failure is only
        logged: whoever reclaims the entry finds the object gone and acks it then). Raises
        when the object could not be removed yet; the entry stays pending."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(entry_id, key, waiter))
        if self._task is None:
            self._next()
        await waiter

    def _next(self) -> None:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        self._task = asyncio.create_task(self._flush(batch), name="worker-finish")

    async def _flush(self, batch: list[_Item]) -> None:
        failed: dict[str, BaseException] = {}
        try:
            await self._settle(batch, failed)
        except BaseException:  # cancelled at shutdown: nobody may wait forever
            for item in batch:
                failed.setdefault(item.entry_id, TransientError("worker stopping"))
            raise
        finally:
            for item in batch:
                if item.waiter.done():
                    continue  # its segment task was cancelled meanwhile
                if item.entry_id in failed:
                    item.waiter.set_exception(failed[item.entry_id])
                else:
                    item.waiter.set_result(None)
            self._task = None
            if self._queue:
                self._next()  # what gathered during this batch goes out now

    async def _settle(self, batch: list[_Item], failed: dict[str, BaseException]) -> None:
        m.FINISH_BATCH.observe(len(batch))
        removals = [i for i in batch if i.key is not None]
        if removals:
            try:
                await self._durable([i.entry_id for i in removals])
            except Exception as e:
                failed.update((i.entry_id, e) for i in removals)
                removals = []
        if removals:
            try:
                # One key twice (a re-announced segment finished by two entries): remove once.
                keys = list(dict.fromkeys(i.key for i in removals if i.key is not None))
                lost = await self._remove(keys)
            except Exception as e:
                lost = {i.key: e for i in removals if i.key is not None}
            failed.update((i.entry_id, lost[i.key]) for i in removals if i.key in lost)
        ids = [i.entry_id for i in batch if i.entry_id not in failed]
        if not ids:
            return
        try:
            await self.call(lambda r: ops.ack(r, self.stream, self.group, ids))
        except Exception as e:
            log.warning("ack failed", extra={"entries": len(ids), "error": type(e).__name__})

    async def _durable(self, ids: list[str]) -> None:
        now = time.monotonic()
        if now - self._replicas_at > REPLICAS_TTL:
            self._replicas = await self.call(ops.replicas)
            self._replicas_at = now
        if self._replicas == 0:
            return
        timeout_ms = max(1, int(self.settings.redis_timeout_seconds * 500))
        acked = await self.call(
            lambda r: ops.durable(r, self.stream, self.group, self.me, ids, timeout_ms)
        )
        if acked < 1:
            # Keep the objects; the retry finds the records done and removes them once a
            # replica confirms. (ROLE is asked again: after a failover the new master may
            # have no replica yet.)
            self._replicas_at = -1e9
            raise TransientError("no replica confirmed the done-markers; segments kept")

    async def _remove(self, keys: list[str]) -> dict[str, Exception]:
        if not self.settings.archive:
            return await self.store.delete_many(keys)
        lost: dict[str, Exception] = {}
        for key in keys:
            try:
                with contextlib.suppress(ObjectMissing):  # another worker archived it first
                    await self.store.move(key, segment.processed_key(segment.name_of(key)))
            except Exception as e:
                lost[key] = e
        return lost

    async def close(self, grace: float) -> None:
        """Let the batch in flight (and what queued behind it) end, within ``grace`` seconds."""
        end = time.monotonic() + grace
        while (task := self._task) is not None:
            await asyncio.wait({task}, timeout=max(0.0, end - time.monotonic()))
            if task.done():
                continue  # the next batch, if any, is self._task now
            queued, self._queue = self._queue, []
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for item in queued:
                if not item.waiter.done():
                    item.waiter.set_exception(TransientError("worker stopping"))
            return
