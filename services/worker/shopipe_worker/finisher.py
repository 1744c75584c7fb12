"""Finishing settled segments in batches: one WAIT, one DeleteObjects and one XACK for many.

A segment whose records are all done or dead-lettered is finished in three steps:
1. durability: a write on this connection (a SET, never a no-op), then ``WAIT n``, on the
   same master connection (epoch) the records' markers were written on, ``n`` every replica
   of that master the Sentinels do not hold for down (shopipe.sentinel.replicas_to_wait_for).
   The done-markers must be on whichever replica a failover promotes before the object goes,
   or the failover could forget them while the object is gone too. Too few replicas
   acknowledging (a lone or just-demoted master, a replica that follows another master now),
   no Sentinel majority naming that master, or the connection changed since: the object is
   kept and the segment done again later, where the markers decide. With
   ``SHOPIPE_REDIS_SINGLE_NODE`` the master's own AOF fsync stands in (``WAITAOF 1 0``);
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
from shopipe.address import parse_address
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import WorkerSettings
from shopipe.errors import TransientError
from shopipe.logs import get_logger
from shopipe.sentinel import MasterClient, replicas_to_wait_for
from shopipe.stream import Keys

from shopipe_worker import metrics as m
from shopipe_worker import streamops as ops
from shopipe_worker.processor import redis_deadline

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)
T = TypeVar("T")
Call = Callable[[Callable[["Redis"], Awaitable[Any]]], Awaitable[Any]]

MAX_BATCH = 1000  # DeleteObjects takes at most 1000 keys


@dataclass
class _Item:
    entry_id: str
    key: str | None  # None: nothing to remove (missing, unparseable), only the XACK
    waiter: asyncio.Future[None]
    epoch: int | None = None  # the master connection its markers were written on


class Finisher:
    """``await finish(entry_id, key)`` removes ``key`` and acknowledges ``entry_id``."""

    def __init__(
        self, settings: WorkerSettings, store: Buffer, call: Call, master: MasterClient
    ) -> None:
        self.settings = settings
        self.store = store
        self.call = call
        self.master = master
        self.deadline = redis_deadline(settings)
        self.stream = settings.stream
        self.group = settings.consumer_group
        self.me = settings.pod_name
        self.fence = Keys(settings.key_prefix).fence(settings.pod_name)
        self._queue: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        self._want: int | None = 1  # replicas a WAIT on _replicas_of must reach (_replicas)
        self._replicas_of: str | None = None
        self._replicas_at = -1e9

    async def finish(self, entry_id: str, key: str | None, epoch: int | None = None) -> None:
        """Returns once the object is gone and the entry acknowledged (an XACK failure is only
        logged: whoever reclaims the entry finds the object gone and acks it then). Raises
        when the object could not be removed yet; the entry stays pending. ``epoch``: the
        master connection the segment's markers were written on (None: none were)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(entry_id, key, waiter, epoch))
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
                epoch = await self._durable([i.entry_id for i in removals])
            except Exception as e:
                failed.update((i.entry_id, e) for i in removals)
                removals = []
            else:
                moved = [i for i in removals if i.epoch is not None and i.epoch != epoch]
                if moved:
                    # Written through an earlier connection, maybe to a master since demoted:
                    # this WAIT says nothing of them. Done again on this master instead.
                    why = TransientError("master connection changed since the records were done")
                    failed.update((i.entry_id, why) for i in moved)
                    removals = [i for i in removals if i not in moved]
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

    async def _durable(self, ids: list[str]) -> int:
        """WAIT (or WAITAOF) after a write; the master connection epoch it ran on. Never
        skipped: a master with no replica confirms nothing, and the objects stay."""
        timeout_ms = max(1, int(self.settings.redis_timeout_seconds * 500))
        local = self.settings.redis_single_node
        want = 1

        async def wait(r: Redis) -> int:
            nonlocal want
            if not local:
                # No await since the master client handed ``r`` over: its address is r's.
                got = await self._replicas(self.master.address)
                if got is None:  # not an error of the connection: call_on raises it as is
                    m.FINISH_UNCONFIRMED.inc(len(ids))
                    log.warning("no majority of the sentinels names this master; segments kept")
                    raise TransientError("the sentinels do not name this master; segments kept")
                want = got
            return await ops.durable(
                r,
                self.stream,
                self.group,
                self.me,
                ids,
                timeout_ms,
                fence=self.fence,
                replicas=want,
                local=local,
            )

        acked, epoch = await self.master.call_on(wait, deadline=self.deadline)
        if acked < want:
            # Keep the objects; the retry finds the records done and removes them once a
            # replica (or the disk) confirms.
            m.FINISH_UNCONFIRMED.inc(len(ids))
            what = "no AOF fsync" if local else f"{acked} of {want} replicas"
            log.warning("done-markers not confirmed; segments kept", extra={"by": what})
            raise TransientError(f"done-markers not confirmed ({what}); segments kept")
        return epoch

    async def _replicas(self, master: str | None) -> int | None:
        """Replicas a WAIT on ``master`` must reach (shopipe.sentinel.replicas_to_wait_for;
        None: the Sentinels do not name it), asked of the Sentinels at most once a second per
        master: under load batches follow each other closely. A stale count errs safe in a
        failover (the count only drops once the Sentinels see a replica gone), and a replica
        back up is waited for a second later."""
        if master is None:
            return None
        now = time.monotonic()
        if master != self._replicas_of or now - self._replicas_at > 1.0:
            self._want = await replicas_to_wait_for(self.master.target, parse_address(master))
            self._replicas_of, self._replicas_at = master, now
        return self._want

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
