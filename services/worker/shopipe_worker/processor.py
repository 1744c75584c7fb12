"""One segment, from the bucket to handled records.

For each record that is not done or dead: run its handlers through the ledger. A handler error
leaves that record for a later attempt without holding back the others; at the last attempt,
or at once for a PermanentError, the record is dead-lettered. Redis or the store out of reach
(a failover, a demoted master) is no handler error: it raises, and counts as no attempt. The
segment is finished only when every record is done or dead-lettered; then the caller has its
object removed and its entry acknowledged (``shopipe_worker.finisher``, in batches). A missing
object was finished by someone else; an unparseable one is dead-lettered whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from dataclasses import dataclass

from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import WorkerSettings
from shopipe.errors import Deferred, PermanentError, RedisUnavailable
from shopipe.logs import get_logger
from shopipe.metrics import topic_label
from shopipe.sentinel import MasterClient
from shopipe.shopify import is_shop
from shopipe.stream import Keys

from shopipe_worker import ledger, redaction
from shopipe_worker import metrics as m
from shopipe_worker.deadletter import Document
from shopipe_worker.events import Event
from shopipe_worker.handlers.binding import HeaderBodyMismatch, guard, is_destructive
from shopipe_worker.handlers.state import body_version
from shopipe_worker.registry import Registry

log = get_logger(__name__)

# Records of a segment applied in one transaction: bounds the size of one MULTI/EXEC (a handler
# may queue the whole body, e.g. the state handler).
BATCH_RECORDS = 32


def redis_deadline(settings: WorkerSettings) -> float:
    """How long one Redis step may wait for a master (a failover takes seconds)."""
    return max(10.0, 5 * settings.redis_timeout_seconds)


@dataclass(frozen=True)
class Done:
    """What became of a segment: ``finished`` means it may be acknowledged."""

    finished: bool
    # done | missing | unparseable | retry | moved | foreign | deferred (no record failed, some
    # were deferred: retried later without counting an attempt)
    outcome: str
    # The master connection (MasterClient.epoch) every Redis step ran on; None: none ran.
    epoch: int | None = None


def describe(e: BaseException) -> str:
    """An error for a dead-letter object: its kind and message (the bucket holds the body)."""
    return f"{type(e).__name__}: {e}"[:2000]


def reason_of(e: BaseException, permanent: bool) -> str:
    """Why a record was dead-lettered: the error's own ``reason`` (e.g.
    ``header_body_mismatch``), else ``permanent`` or ``attempts``."""
    reason = getattr(e, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return "permanent" if permanent else "attempts"


class Processor:
    def __init__(
        self,
        settings: WorkerSettings,
        master: MasterClient,
        store: Buffer,
        registry: Registry,
    ) -> None:
        self.settings = settings
        self.master = master
        self.store = store
        self.registry = registry
        self.keys = Keys(settings.key_prefix)
        self.deadline = redis_deadline(settings)

    async def process(self, key: str, attempt: int) -> Done:
        """Handle the segment at ``key`` on delivery number ``attempt`` (1-based)."""
        if not segment.is_segment_key(key):
            # Only incoming/ segments are ever announced; anything else must not be touched.
            log.warning("announcement names no incoming segment; dropped")
            return Done(True, "foreign")
        try:
            data = await self.store.get(key)
        except ObjectMissing:
            m.SEGMENTS.labels(outcome="missing").inc()
            return Done(True, "missing")
        name = segment.name_of(key)
        try:
            records = segment.decode(data)
        except segment.SegmentError as e:
            await self._dead_segment(key, name, e)
            m.SEGMENTS.labels(outcome="unparseable").inc()
            return Done(True, "unparseable")
        # Ids come from the object's name, not from its content: keys built from them
        # (dead markers, dead-letter objects) must not be steerable by the bytes.
        events = [
            Event.from_record(dataclasses.replace(rec, id=segment.record_id(name, index)))
            for index, rec in enumerate(records)
        ]
        settled = 0
        epochs: set[int] = set()
        failed: Counter[str] = Counter()
        for start in range(0, len(events), BATCH_RECORDS):
            batch = events[start : start + BATCH_RECORDS]
            settled += await self._records(batch, key, attempt, epochs, failed)
        if len(epochs) > 1:
            # Markers went to two servers (a failover mid-segment): no one WAIT can vouch for
            # them all. Done again on the current master, where the markers decide.
            return Done(False, "moved")
        epoch = next(iter(epochs), None)
        if settled < len(records):
            return Done(False, "retry" if failed["failed"] else "deferred", epoch)
        if self.settings.archive:
            await self._before_archive(key, events, records)
        m.SEGMENTS.labels(outcome="done").inc()
        # The caller removes the object (shopipe_worker.finisher) once a WAIT on ``epoch``
        # confirmed the markers.
        return Done(True, "done", epoch)

    async def _records(
        self, events: list[Event], key: str, attempt: int, epochs: set[int], failed: Counter[str]
    ) -> int:
        """How many of ``events`` are settled (done, duplicate or dead-lettered); their
        handlers run in as few transactions as ``ledger.apply_many`` allows."""
        settled = 0
        work: list[ledger.Work] = []
        for event in events:
            handlers = self.registry.handlers_for(event.topic)
            if handlers and is_destructive(event.topic):
                # Before any handler, the user's too: the signed body must support the headers.
                handlers = [("binding", guard), *handlers]
            if handlers:
                work.append((event, handlers))
            else:
                m.RECORDS.labels(topic=topic_label(event.topic), outcome="processed").inc()
                settled += 1
        if not work:
            return settled
        # Bounded: each transaction answers for at least one record of ``work``.
        while work:
            batch = work
            try:
                results = await self._apply(batch, epochs)
            except RedisUnavailable:
                raise  # no master: nothing can be decided; the whole segment waits
            except Exception as e:
                # An error of the transaction itself (not of one record's handlers): one
                # transaction for the first record alone tells whose it is.
                results = [e] if len(batch) == 1 else await self._apply_one(batch[0], epochs)
            for (event, _), result in zip(batch, results, strict=False):
                if await self._settle(event, result, key, attempt, epochs):
                    settled += 1
                elif not isinstance(result, Deferred):
                    failed["failed"] += 1
            work = work[len(results) :]
        return settled

    async def _apply(
        self, batch: list[ledger.Work], epochs: set[int]
    ) -> list[ledger.Result | Exception]:
        ttl = self.settings.dedup_ttl_seconds
        results, epoch = await self.master.call_on(
            lambda r: ledger.apply_many(
                r, self.keys, batch, ttl=ttl, store=self.store, settings=self.settings
            ),
            deadline=self.deadline,
        )
        epochs.add(epoch)
        return results

    async def _apply_one(
        self, one: ledger.Work, epochs: set[int]
    ) -> list[ledger.Result | Exception]:
        try:
            return await self._apply([one], epochs)
        except RedisUnavailable:
            raise
        except Exception as e:
            return [e]

    async def _settle(
        self,
        event: Event,
        result: ledger.Result | Exception,
        key: str,
        attempt: int,
        epochs: set[int],
    ) -> bool:
        """Count one record's result; dead-letter it when it failed for good. True when the
        record is settled."""
        topic = topic_label(event.topic)
        s = self.settings
        if isinstance(result, Deferred):
            m.RECORDS.labels(topic=topic, outcome="deferred").inc()
            return False  # not attempted: never dead-lettered for it
        if isinstance(result, Exception):
            e = result
            m.RECORDS.labels(topic=topic, outcome="failed").inc()
            permanent = isinstance(e, PermanentError)
            log.warning(
                "handler failed",
                extra={
                    "record": event.record_id,
                    "topic": topic,
                    "attempt": attempt,
                    "error": type(e).__name__,
                    "permanent": permanent,
                },
            )
            if isinstance(e, HeaderBodyMismatch):
                m.HEADER_BODY_MISMATCH.labels(topic=topic).inc()
            if permanent or attempt >= s.max_attempts:
                reason = reason_of(e, permanent)
                await self._dead_record(event, key, describe(e), attempt, reason, epochs)
                m.RECORDS.labels(topic=topic, outcome="dead_lettered").inc()
                return True
            return False
        if result.outcome is ledger.Outcome.PROCESSED:
            m.RECORDS.labels(topic=topic, outcome="processed").inc()
            m.HANDLER_SECONDS.labels(topic=topic).observe(result.handler_seconds)
            m.END_TO_END_SECONDS.observe(max(0.0, time.time() - event.received_at))
        elif result.outcome is ledger.Outcome.DUPLICATE:
            m.RECORDS.labels(topic=topic, outcome="duplicate").inc()
        return True

    async def _dead_record(
        self, event: Event, key: str, error: str, attempts: int, reason: str, epochs: set[int]
    ) -> None:
        dead_key = segment.dead_letter_key(event.record_id)
        if await self._redacted(event):
            # The shop's data was erased after this record was made: no copy of its body.
            log.warning("record of a redacted shop dead-lettered without its body")
        else:
            # Indexed before it is written: shop/redact finds it without listing the bucket.
            await redaction.note(self.store, {event.shop}, dead_key)
            doc = Document.of(event, key, error, attempts, reason)
            await self.store.put_json(dead_key, doc.to_json())
        ttl = self.settings.dedup_ttl_seconds
        _, epoch = await self.master.call_on(
            lambda r: ledger.mark_dead(r, self.keys, event.record_id, ttl=ttl),
            deadline=self.deadline,
        )
        epochs.add(epoch)
        log.error(
            "record dead-lettered",
            extra={"record": event.record_id, "topic": topic_label(event.topic)},
        )

    async def _redactions(self, shops: set[str]) -> dict[str, int]:
        """The redaction version of each of ``shops`` that has one."""
        names = sorted(s for s in shops if is_shop(s))
        if not names:
            return {}
        keys = [self.keys.redacted(s) for s in names]
        raw = await self.master.call(lambda r: r.mget(keys), deadline=self.deadline)
        return {s: int(v) for s, v in zip(names, raw, strict=True) if v is not None}

    async def _redacted(self, event: Event) -> bool:
        """True when ``event``'s shop was redacted at or after the version of its body."""
        since = (await self._redactions({event.shop})).get(event.shop)
        return since is not None and since >= body_version(event)

    async def _before_archive(
        self, key: str, events: list[Event], records: list[segment.Record]
    ) -> None:
        """Index the segment under each of its shops, and blank the bodies of records whose
        shop was redacted after them, before the finisher moves it under ``processed/``."""
        shops = {ev.shop for ev in events}
        await redaction.note(self.store, shops, segment.processed_key(segment.name_of(key)))
        since = await self._redactions(shops)
        if not since:
            return
        blanked = [
            redaction.blank(rec) if ev.shop in since and since[ev.shop] >= body_version(ev) else rec
            for ev, rec in zip(events, records, strict=True)
        ]
        if blanked != records and await self.store.exists(key):
            await self.store.put_segment(key, segment.encode(blanked))

    async def _dead_segment(self, key: str, name: str, e: Exception) -> None:
        dead = segment.dead_segment_key(name)
        await self.store.put_json(
            dead + ".json",
            {"segment": key, "error": describe(e), "dead_lettered_at": time.time()},
        )
        with contextlib.suppress(ObjectMissing):  # another worker moved it first
            await self.store.move(key, dead)
        log.error("segment unparseable, dead-lettered", extra={"segment": name})
