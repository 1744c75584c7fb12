"""The sweeper: finds segments under ``incoming/`` that no announcement covers and announces
them again.

It recovers segments whose XADD failed after a durable PUT, and stream entries lost when an
asynchronous replica was promoted or the stream was trimmed. A segment counts as covered while
an entry naming it is undelivered or pending in the group (a record waiting for its retry is
pending, and must not be announced twice: that would restart its attempt count).

Keys are sorted by receive time, so the sweeper walks ``incoming/`` page by page from a cursor
(``StartAfter``), holding one page at a time whatever the bucket holds. The cursor is kept in
Redis: a round ends when the backlog it may add is announced or the lock is lost, and the next
round (on any worker) continues there. A pass ends at the first segment younger than the grace
period (all later ones are younger still) or at the end of the listing; the next starts over.

At most one worker sweeps at a time: redis-py's Lock (SET NX PX with an owner token; renewal
and release compare the token, so an expired holder can neither renew nor remove a
successor's lock), renewed before every page. When a renewal fails the sweep stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from shopipe import segment
from shopipe.buffer import Buffer, ObjectInfo
from shopipe.config import WorkerSettings
from shopipe.logs import get_logger
from shopipe.sentinel import MasterClient
from shopipe.stream import Keys, announce_in, as_str

from shopipe_worker import backlog
from shopipe_worker import metrics as m
from shopipe_worker.processor import redis_deadline

log = get_logger(__name__)


# Entries per command when reading the backlog: a reply of 10,000 entries, parsed on a busy
# worker, ran past the command timeout, and the reset that followed failed other work in hand.
CHUNK = 1000


async def covered_keys(r: Redis, stream: str, group: str, cap: int) -> set[str] | None:
    """Object keys named by entries undelivered or pending in ``group``; None past ``cap``
    (a backlog that large is being worked on: sweeping it would only duplicate it)."""
    sb = await backlog.stream_backlog(r, stream, group)
    if sb.pending > cap:
        return None
    keys: set[str] = set()
    start, read = "(" + sb.last_delivered, 0
    while True:  # bounded: CHUNK entries a step, at most cap in all
        rows: Any = await r.xrange(stream, min=start, max="+", count=CHUNK) or []
        read += len(rows)
        if read > cap:
            return None
        keys.update(as_str(f.get(b"key", b"")) for _, f in rows if f)
        if len(rows) < CHUNK:
            break
        start = "(" + as_str(rows[-1][0])
    # No group yet (a Redis that lost its data, before any worker read): nothing pending.
    start, read = "-", 0
    while sb.pending and read < cap:  # bounded likewise
        pending = await r.xpending_range(stream, group, min=start, max="+", count=CHUNK)
        read += len(pending)
        async with r.pipeline(transaction=False) as pipe:
            for row in pending:
                pipe.xrange(stream, min=row["message_id"], max=row["message_id"], count=1)
            for found in await pipe.execute():
                keys.update(as_str(f.get(b"key", b"")) for _, f in found or [] if f)
        if len(pending) < CHUNK:
            break
        start = "(" + as_str(pending[-1]["message_id"])
    return keys


@dataclass
class Pass:
    """Where the current pass over incoming/ stands (kept in Redis between rounds)."""

    after: str = ""  # last key swept; "" starts a pass
    seen: int = 0  # segments older than the grace period met so far

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> Pass:
        doc = {as_str(k): as_str(v) for k, v in raw.items()}
        return cls(doc.get("after", ""), int(doc.get("seen", "0") or 0))


class Sweeper:
    def __init__(
        self,
        settings: WorkerSettings,
        master: MasterClient,
        store: Buffer,
        *,
        cap: int = backlog.SCAN_CAP,
    ) -> None:
        self.settings = settings
        self.master = master
        self.store = store
        self.keys = Keys(settings.key_prefix)
        self.deadline = redis_deadline(settings)
        # Renewed before every page, so it only has to outlast one page's LIST and round trip,
        # with room for a machine under load; it also delays a successor if its holder dies.
        self.lock_seconds = max(30.0, 3 * settings.sweep_interval_seconds)
        # The most entries the stream may hold undelivered or pending for a sweep to run and
        # add to it (covered_keys reads that many; past it the backlog is being worked on).
        self.cap = cap
        self._oldest = 0.0  # seconds, of the oldest segment seen at the start of this round

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
        """One round; the number of segments announced again, None if another worker holds
        the lock."""
        s = self.settings
        sb = await self.master.call(
            lambda r: backlog.stream_backlog(r, s.stream, s.consumer_group), deadline=self.deadline
        )
        backlog.publish_stream(sb)
        lock = await self.master.call(self._acquire, deadline=self.deadline)
        if lock is None:
            return None
        try:
            return await self._sweep(lock, self.cap - sb.pending - sb.lag)
        finally:
            with contextlib.suppress(Exception):  # lost already, or expires by its TTL
                await asyncio.wait_for(lock.release(), 3.0)

    async def _acquire(self, r: Redis) -> Lock | None:
        # Bound to the client it was taken on: after a failover its renewal fails (the new
        # master may not hold it) and the sweep stops.
        lock = r.lock(
            self.keys.sweeper_lock(),
            timeout=self.lock_seconds,
            blocking=False,
            thread_local=False,  # one task sweeps; the token lives on the object
        )
        return lock if await lock.acquire(token=secrets.token_hex(16)) else None

    async def _held(self, lock: Lock) -> bool:
        """Renew the lock to its full TTL; False (and the sweep stops) if it was lost."""
        try:
            await asyncio.wait_for(lock.reacquire(), self.deadline)
        except Exception as e:
            log.warning("sweeper lock lost; sweep stopped", extra={"error": type(e).__name__})
            return False
        return True

    async def _sweep(self, lock: Lock, room: int) -> int:
        s = self.settings
        if room < self.cap // 2:
            # Reading a backlog that large costs more than the few segments it leaves room
            # for; the next round finds more room.
            log.info("backlog too large to sweep now; skipped")
            return 0
        cursor = self.keys.sweeper_cursor()
        at = Pass.parse(await self.master.call(lambda r: r.hgetall(cursor), deadline=self.deadline))
        horizon = time.time() - s.sweep_grace_seconds
        if at.after:
            self._publish_oldest(await self.store.list(segment.INCOMING, limit=1))
        covered: set[str] | None = None
        announced = 0
        # Bounded: every page moves the cursor on through a finite listing (a page is listed
        # twice at most), and the pass ends at its end or at the grace horizon.
        while await self._held(lock):
            page = await self.store.list(
                segment.INCOMING, limit=s.sweep_page_keys, start_after=at.after
            )
            if not at.after:
                self._publish_oldest(page)
            old = [
                o.key
                for o in page
                if segment.is_segment_key(o.key) and segment.time_of(o.key) < horizon
            ]
            if old and covered is None:
                covered = await self.master.call(
                    lambda r: covered_keys(r, s.stream, s.consumer_group, self.cap),
                    deadline=self.deadline,
                )
                if covered is None:
                    log.info("backlog too large to sweep now; skipped")
                    return announced
                # List this page again: a key listed before ``covered`` was read may have been
                # acknowledged in between (and looked lost); one listed after it was read is
                # either covered or lost, since an object goes before its entry's XACK.
                continue
            lost, full = self._advance(at, page, horizon, covered or set(), room - announced)
            ended = not full and (len(page) < s.sweep_page_keys or len(old) < _segments(page))
            await self.master.call(
                partial(self._announce, keys=lost, at=None if ended else at),
                deadline=self.deadline,
            )
            announced += len(lost)
            m.SWEEPER_RECOVERED.inc(len(lost))
            if lost:
                log.warning("segments announced again", extra={"count": len(lost)})
            if ended:
                backlog.publish_incoming(at.seen + _segments(page) - len(old), self._oldest)
                return announced
            if full:
                return announced
        return announced

    def _advance(
        self, at: Pass, page: list[ObjectInfo], horizon: float, covered: set[str], room: int
    ) -> tuple[list[str], bool]:
        """Move ``at`` over ``page`` up to the grace horizon; the keys to announce again, and
        whether ``room`` ran out (then ``at`` stops before the first key it had no room for)."""
        lost: list[str] = []
        for o in page:
            if segment.is_segment_key(o.key):
                if segment.time_of(o.key) >= horizon:
                    break
                if o.key not in covered:
                    if len(lost) >= room:
                        return lost, True
                    lost.append(o.key)
                at.seen += 1
            at.after = o.key
        return lost, False

    async def _announce(self, r: Redis, keys: list[str], at: Pass | None) -> None:
        """One round trip: the page's announcements and the cursor (deleted when the pass
        ended, so the next round starts over)."""
        s = self.settings
        async with r.pipeline(transaction=False) as pipe:
            # n=0: the record count is unknown without reading the object.
            announce_in(pipe, s.stream, keys, 0, s.stream_maxlen)
            if at is None:
                pipe.delete(self.keys.sweeper_cursor())
            else:
                pipe.hset(self.keys.sweeper_cursor(), mapping={"after": at.after, "seen": at.seen})
            await pipe.execute()

    def _publish_oldest(self, page: list[ObjectInfo]) -> None:
        keys = [o.key for o in page if segment.is_segment_key(o.key)]
        self._oldest = max(0.0, time.time() - segment.time_of(keys[0])) if keys else 0.0
        m.OLDEST_SECONDS.set(self._oldest)


def _segments(page: list[ObjectInfo]) -> int:
    return sum(1 for o in page if segment.is_segment_key(o.key))
