"""The consumer loop: read announcements, process segments concurrently, retry, reclaim.

Every entry a worker holds is either in flight (a task processes it) or waiting for its retry
(its handlers failed; it stays pending in the group). Both are heartbeated five times per
``claim_idle_seconds`` by a task of their own, which runs until the drain is over (XCLAIM JUSTID
keeps their idle time low, and only for entries this consumer still owns), so only the entries
of a crashed or paused consumer grow idle, and any worker reclaims those after
``claim_idle_seconds`` (XAUTOCLAIM), before it reads new ones: seconds, while a handler may run
far longer without being run twice (unless it blocks the event loop that long). A waiting
entry is retried by its holder after an exponential backoff on its delivery count, claiming it
again (XCLAIM, which counts the delivery); past ``max_attempts`` the processor dead-letters what
still fails.
A segment that failed for want of Redis or the store (a failover, a demoted master, an S3
outage) is no handler attempt: it is taken back without counting a delivery (XCLAIM JUSTID),
so an outage can never push a good record to the dead-letter queue.

Redis errors never end the loop: the master client resolves the master again and this loop
backs off with jitter. Work in hand is never dropped: its object stays in the bucket until the
segment is finished, and its entry stays pending until acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe.backoff import Backoff, doubling
from shopipe.config import WorkerSettings
from shopipe.errors import RedisUnavailable
from shopipe.logs import get_logger
from shopipe.sentinel import MasterClient
from shopipe.stream import ensure_group

from shopipe_worker import metrics as m
from shopipe_worker import streamops as ops
from shopipe_worker.finisher import Finisher
from shopipe_worker.processor import Done, Processor, redis_deadline
from shopipe_worker.streamops import Entry

log = get_logger(__name__)
T = TypeVar("T")


def backoff(s: WorkerSettings, attempt: int) -> float:
    """Seconds before delivery ``attempt + 1``: doubling from the base, capped, jittered."""
    base = doubling(s.retry_base_seconds, s.retry_max_seconds, attempt)
    return base * random.uniform(0.9, 1.1)  # jitter: retries of one burst spread out


class Consumer:
    def __init__(self, settings: WorkerSettings, master: MasterClient, processor: Processor):
        s = settings
        self.settings = s
        self.master = master
        self.processor = processor
        self.me = s.pod_name
        self.stream = s.stream
        self.group = s.consumer_group
        self.in_flight: dict[str, Entry] = {}
        self.waiting: dict[str, Entry] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()  # a slot freed up, or stop was asked
        self._cursor = "0-0"
        self.finisher = Finisher(s, processor.store, self.call, master)
        self.deadline = redis_deadline(s)
        # The block must end before the socket timeout, or every quiet read would look dead.
        self.block_ms = max(10, int(min(s.block_seconds, 0.8 * s.redis_timeout_seconds) * 1000))
        self.claim_idle_ms = int(s.claim_idle_seconds * 1000)
        self.reclaim_every = min(1.0, s.claim_idle_seconds / 4)
        self.max_waiting = max(100, 50 * s.concurrency)

    # --- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def status(self) -> dict[str, Any]:
        return {
            "consumer": self.me,
            "in_flight": len(self.in_flight),
            "waiting_retry": len(self.waiting),
        }

    async def call(self, fn: Callable[[Redis], Awaitable[T]], deadline: float | None = None) -> T:
        """Run ``fn`` on the master; if a failover lost the group, create it again and retry."""
        limit = self.deadline if deadline is None else deadline
        try:
            return await self.master.call(fn, deadline=limit)
        except rex.ResponseError as e:
            if not ops.is_nogroup(e):
                raise
            log.warning("consumer group missing (failover?); creating it again")
            await self.master.call(
                lambda r: ensure_group(r, self.stream, self.group), deadline=limit
            )
            return await self.master.call(fn, deadline=limit)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until something changes (a freed slot, stop)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=seconds)

    # --- main loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until ``stop()``; then drain within ``drain_seconds`` and return."""
        with contextlib.suppress(Exception):  # else created on the first NOGROUP
            await self.master.call(
                lambda r: ensure_group(r, self.stream, self.group), deadline=self.deadline
            )
        beat = asyncio.create_task(self._beat(), name="worker-heartbeat")
        maintenance = asyncio.create_task(self._maintain(), name="worker-maintenance")
        try:
            await self._read_loop()
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            await self._drain(beat)

    async def _read_loop(self) -> None:
        delays = Backoff(0.1, 5.0)  # full jitter
        next_reclaim = 0.0
        while not self.stopping:
            free = self.settings.concurrency - len(self.in_flight)
            if free <= 0 or len(self.waiting) >= self.max_waiting:
                await self._pause(self.settings.block_seconds)
                continue
            try:
                # Idle entries (a dead consumer's) go before new ones: they are older, and
                # under load every slot freed would otherwise go to a new entry first.
                if time.monotonic() >= next_reclaim:
                    taken = await self._reclaim(free)
                    # Every slot went to idle entries: there may be more, look again first.
                    wait = 0.0 if taken >= free else self.reclaim_every
                    next_reclaim = time.monotonic() + wait
                    free -= taken
                    if free <= 0:
                        continue
                entries = await self.call(self._reader(free))
                delays.reset()
            # RuntimeError: uvloop's, for a command on a connection the master client closed
            # under it when it reset (seen under load); like any Redis error, it must not end
            # the loop (the worker would exit with its work in hand).
            except (RedisUnavailable, rex.RedisError, OSError, RuntimeError) as e:
                log.warning("reading the stream failed", extra={"error": type(e).__name__})
                await self._pause(delays.wait())
                continue
            for entry in entries:
                if self._stopping.is_set():  # stop came during the read
                    await self._release([entry.id], self.claim_idle_ms)
                else:
                    self._start(entry)

    def _reader(self, count: int) -> Callable[[Redis], Awaitable[list[Entry]]]:
        async def read(r: Redis) -> list[Entry]:
            return await ops.read(r, self.stream, self.group, self.me, count, self.block_ms)

        return read

    def _start(self, entry: Entry) -> None:
        self.waiting.pop(entry.id, None)
        self.in_flight[entry.id] = entry
        m.IN_FLIGHT.set(len(self.in_flight))
        self._tasks[entry.id] = asyncio.create_task(self._handle(entry), name=f"seg:{entry.id}")

    async def _handle(self, entry: Entry) -> None:
        try:
            try:
                done = await self.processor.process(entry.key, entry.attempt)
                if done.finished:
                    # Only a segment whose records were handled still has an object to remove.
                    removing = entry.key if done.outcome == "done" else None
                    await self.finisher.finish(entry.id, removing, done.epoch)
            except Exception as e:
                # Storage or Redis out of reach, or not confirming: retried, counting no attempt.
                log.warning(
                    "segment not finished",
                    extra={"entry": entry.id, "attempt": entry.attempt, "error": type(e).__name__},
                )
                done = Done(False, "unavailable")
            if not done.finished:
                if done.outcome == "retry":  # a handler failed: that was an attempt
                    entry.stalls = 0
                    wait = backoff(self.settings, entry.attempt)
                else:
                    entry.stalls += 1
                    wait = backoff(self.settings, entry.stalls)
                entry.retry_at = time.monotonic() + wait
                self.waiting[entry.id] = entry
        finally:
            self.in_flight.pop(entry.id, None)
            self._tasks.pop(entry.id, None)
            m.IN_FLIGHT.set(len(self.in_flight))
            self._changed.set()

    # --- maintenance -------------------------------------------------------------------------

    async def _maintain(self) -> None:
        s = self.settings
        tick = self.reclaim_every
        reap_every = min(60.0, max(1.0, s.consumer_idle_seconds / 2))
        last_reap = time.monotonic()
        while True:
            await asyncio.sleep(tick)  # a period, not a synchronisation
            now = time.monotonic()
            try:
                await self._retry_due()
                if now - last_reap >= reap_every:
                    await self._reap()
                    last_reap = now
            except Exception as e:
                log.warning("maintenance step failed", extra={"error": type(e).__name__})

    async def _beat(self) -> None:
        """Heartbeat the entries in hand until cancelled (after the drain). Its own task, so
        no slow maintenance step delays it; a missed beat is caught up by the next ones."""
        every = self.settings.claim_idle_seconds / 5
        while True:
            await asyncio.sleep(every)  # a period, not a synchronisation
            try:
                await self._heartbeat()
            except Exception as e:
                log.warning("heartbeat failed", extra={"error": type(e).__name__})

    async def _heartbeat(self) -> None:
        ids = [*self.in_flight, *self.waiting]
        if not ids:
            return
        mine = await self.call(
            lambda r: ops.touch(r, self.stream, self.group, self.me, ids),
            deadline=self.settings.claim_idle_seconds,
        )
        for gone in [i for i in ids if i not in mine]:
            if self.waiting.pop(gone, None) is None and gone in self.in_flight:
                # Acknowledged by its finish just now, or taken over by another consumer
                # after a pause past the threshold (done-markers keep its records from
                # being applied twice).
                log.info("an entry in flight is no longer held", extra={"entry": gone})

    async def _retry_due(self) -> None:
        free = self.settings.concurrency - len(self.in_flight)
        now = time.monotonic()
        due = sorted(
            (e for e in self.waiting.values() if e.retry_at <= now), key=lambda e: e.retry_at
        )
        due = due[: max(0, free)]
        if not due or self.stopping:
            return
        # Another attempt after a handler failure counts a delivery (XCLAIM); a retry after an
        # outage does not (XCLAIM JUSTID): the delivery count stays the handler attempts.
        counted = [e.id for e in due if e.stalls == 0]
        quiet = [e.id for e in due if e.stalls > 0]
        claimed: set[str] = set()
        if counted:
            got = await self.call(lambda r: ops.claim(r, self.stream, self.group, self.me, counted))
            claimed = {e.id for e in got}
        if quiet:
            claimed |= await self.call(
                lambda r: ops.touch(r, self.stream, self.group, self.me, quiet)
            )
        for entry in due:
            self.waiting.pop(entry.id, None)
            if entry.id in claimed:
                if entry.stalls == 0:
                    entry.attempt += 1
                self._start(entry)

    async def _reclaim(self, free: int) -> int:
        """Take up to ``free`` entries idle past ``claim_idle_seconds``; how many started."""
        cursor, entries = await self.call(
            lambda r: ops.autoclaim(
                r, self.stream, self.group, self.me, self.claim_idle_ms, self._cursor, free
            )
        )
        self._cursor = cursor
        started = 0
        for entry in entries:
            if entry.id in self.in_flight:
                continue
            log.info("reclaimed an idle entry", extra={"entry": entry.id, "attempt": entry.attempt})
            self._start(entry)
            started += 1
        return started

    async def _reap(self) -> None:
        idle_ms = int(self.settings.consumer_idle_seconds * 1000)
        removed = await self.call(
            lambda r: ops.reap_consumers(r, self.stream, self.group, self.me, idle_ms)
        )
        for name in removed:
            log.info("removed an idle consumer", extra={"consumer": name})

    # --- shutdown ----------------------------------------------------------------------------

    async def _drain(self, beat: asyncio.Task[None]) -> None:
        """Let in-flight segments finish within ``drain_seconds`` (still heartbeated: the drain
        may outlast the claim threshold); release the rest."""
        tasks = list(self._tasks.values())
        late_ids: list[str] = []
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.drain_seconds)
            late_ids = [i for i, t in self._tasks.items() if t in late]
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        beat.cancel()  # before the releases, which a late beat would undo
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        # Look idle at once, so another worker reclaims them without waiting.
        await self._release(late_ids, self.claim_idle_ms + 1000)
        await self.finisher.close(grace=5.0)
        # Waiting entries go idle as if their retry time had come: claimable then, not sooner.
        # One call per second of time left, not one per entry: a worker may hold hundreds
        # (records deferred by a forward route at its limits), and the drain is bounded.
        now = time.monotonic()
        by_left: dict[int, list[str]] = {}
        for entry in self.waiting.values():
            by_left.setdefault(math.ceil(max(0.0, entry.retry_at - now)), []).append(entry.id)
        for left, ids in sorted(by_left.items()):
            await self._release(ids, max(0, self.claim_idle_ms - left * 1000))
        self.waiting.clear()

    async def _release(self, ids: list[str], idle_ms: int) -> None:
        if not ids:
            return
        try:
            await self.call(
                lambda r: ops.touch(r, self.stream, self.group, self.me, ids, idle_ms),
                deadline=min(self.deadline, 3.0),
            )
        except Exception as e:
            # They are reclaimed after claim_idle_seconds anyway.
            log.warning("releasing entries failed", extra={"error": type(e).__name__})
