"""The sweeper: finds segments under ``incoming/`` that no announcement covers and announces
them again.

It recovers segments whose XADD failed after a durable PUT, and stream entries lost when an
asynchronous replica was promoted or the stream was trimmed. At most one worker sweeps at a
time: a Redis lock with a TTL and an owner token, released by compare-and-delete so an expired
holder cannot remove a successor's lock. A segment counts as covered while an entry naming it
is undelivered or pending in the group (a record waiting for its retry is pending, and must not
be announced twice: that would restart its attempt count).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from functools import partial
from typing import Any

from redis.asyncio import Redis
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings
from shopipe.logs import get_logger
from shopipe.sentinel import MasterClient
from shopipe.stream import Keys, announce

from shopipe_worker import backlog
from shopipe_worker import metrics as m
from shopipe_worker.processor import redis_deadline

log = get_logger(__name__)

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def covered_keys(r: Redis, stream: str, group: str, cap: int) -> set[str] | None:
    """Object keys named by entries undelivered or pending in ``group``; None past ``cap``
    (a backlog that large is being worked on: sweeping it would only duplicate it)."""
    sb = await backlog.stream_backlog(r, stream, group)
    if sb.pending > cap:
        return None
    undelivered: Any = await r.xrange(stream, min="(" + sb.last_delivered, max="+", count=cap + 1)
    if len(undelivered or []) > cap:
        return None
    keys = {_s(f.get(b"key", b"")) for _, f in undelivered or [] if f}
    pending = await r.xpending_range(stream, group, min="-", max="+", count=cap)
    if pending:
        async with r.pipeline(transaction=False) as pipe:
            for row in pending:
                pipe.xrange(stream, min=row["message_id"], max=row["message_id"], count=1)
            for found in await pipe.execute():
                keys.update(_s(f.get(b"key", b"")) for _, f in found or [] if f)
    return keys


class Sweeper:
    def __init__(self, settings: WorkerSettings, master: MasterClient, store: Buffer) -> None:
        self.settings = settings
        self.master = master
        self.store = store
        self.keys = Keys(settings.key_prefix)
        self.deadline = redis_deadline(settings)
        self.lock_ms = int(max(5.0, 3 * settings.sweep_interval_seconds) * 1000)

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every ``sweep_interval_seconds`` until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self.sweep_once()
            except Exception as e:
                log.warning("sweep failed", extra={"error": type(e).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.sweep_interval_seconds)

    async def sweep_once(self) -> int | None:
        """One sweep; the number of segments announced again, None if another worker holds
        the lock."""
        s = self.settings
        sb = await self.master.call(
            lambda r: backlog.stream_backlog(r, s.stream, s.consumer_group), deadline=self.deadline
        )
        backlog.publish_stream(sb)
        token = secrets.token_hex(16)
        lock = self.keys.sweeper_lock()
        got = await self.master.call(
            lambda r: r.set(lock, token, nx=True, px=self.lock_ms), deadline=self.deadline
        )
        if not got:
            return None
        try:
            return await self._sweep()
        finally:
            with contextlib.suppress(Exception):
                await self.master.call(lambda r: r.eval(RELEASE, 1, lock, token), deadline=3.0)

    async def _sweep(self) -> int:
        s = self.settings
        objects = await self.store.list(segment.INCOMING)
        now = time.time()
        backlog.publish_incoming(*backlog.incoming_summary(objects, now))
        old = [
            o.key
            for o in objects
            if segment.is_segment_key(o.key)
            and segment.time_of(o.key) < now - s.sweep_grace_seconds
        ]
        if not old:
            return 0
        covered = await self.master.call(
            lambda r: covered_keys(r, s.stream, s.consumer_group, backlog.SCAN_CAP),
            deadline=self.deadline,
        )
        if covered is None:
            log.info("backlog too large to sweep now; skipped")
            return 0
        lost = [k for k in old if k not in covered]
        for key in lost:
            # n=0: the record count is unknown without reading the object.
            await self.master.call(
                partial(announce, stream=s.stream, key=key, n=0, maxlen=s.stream_maxlen),
                deadline=self.deadline,
            )
            m.SWEEPER_RECOVERED.inc()
        if lost:
            log.warning("segments announced again", extra={"count": len(lost)})
        return len(lost)
