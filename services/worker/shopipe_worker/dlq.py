"""The dead-letter prefix: list what kept failing, and replay it.

A replay never applies a record twice. Per batch it (1) checks the done-markers: a record that
took effect meanwhile (Shopify's retry succeeded, an earlier replay got through) is reported and
skipped; (2) clears only the dead-marker; (3) writes the others as a new segment under
``incoming/`` and (4) announces it; (5) deletes the dead-letter objects. The done-markers are
kept, so however often the replay is cut off and run again, and however many copies of a record
were written, the worker applies it once. A record without a webhook id gets
``record:<original id>`` as one, so its done-marker is the same in every copy.
Re-running a record that is done is a deliberate ``force``: its done-markers are cleared too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import WorkerSettings
from shopipe.progress import Progress
from shopipe.sentinel import MasterClient
from shopipe.stream import Keys, announce

from shopipe_worker import ledger
from shopipe_worker.deadletter import BadDeadLetter, Document
from shopipe_worker.events import H_WEBHOOK_ID, Event
from shopipe_worker.processor import redis_deadline

BATCH = 100  # records per replayed segment


@dataclass(frozen=True)
class DeadLetter:
    """A dead-letter object: its key and its document."""

    key: str
    doc: Document

    @property
    def record_id(self) -> str:
        return self.doc.record_id

    @property
    def topic(self) -> str:
        return self.doc.topic

    def summary(self) -> dict[str, Any]:
        return self.doc.summary()

    def record(self) -> segment.Record:
        """The original record (id still the old one)."""
        return self.doc.record()


def is_record_key(key: str) -> bool:
    return (
        key.startswith(segment.DEAD_LETTER)
        and not key.startswith(segment.DEAD_SEGMENTS)
        and key.endswith(".json")
    )


async def list_dead(store: Buffer, topic: str | None = None) -> list[DeadLetter]:
    """Dead-lettered records (oldest segment first), optionally of one topic."""
    out: list[DeadLetter] = []
    for obj in await store.list(segment.DEAD_LETTER):
        if not is_record_key(obj.key):
            continue
        try:
            doc = json.loads(await store.get(obj.key))
        except ObjectMissing:
            continue  # replayed meanwhile
        except ValueError as e:
            raise BadDeadLetter(f"{obj.key}: not JSON") from e
        dl = DeadLetter(obj.key, Document.from_json(doc, obj.key))
        if topic is None or dl.topic == topic:
            out.append(dl)
    return out


async def list_dead_segments(store: Buffer) -> list[str]:
    return [
        o.key
        for o in await store.list(segment.DEAD_SEGMENTS)
        if segment.is_segment_key(o.key, segment.DEAD_SEGMENTS)
    ]


@dataclass
class Report:
    """What a replay did, by original record id."""

    replayed: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)  # skipped, dead-letter removed
    forced: list[str] = field(default_factory=list)  # done, yet run again (force)
    segments: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Batch:
    items: list[DeadLetter]
    todo: list[segment.Record]  # the originals to write again
    done: list[str]  # record ids already done (skipped unless forced)


class Replay:
    """The steps of a replay, each safe to cut off and repeat (tests run them partially)."""

    def __init__(
        self,
        settings: WorkerSettings,
        master: MasterClient,
        store: Buffer,
        *,
        force: bool = False,
    ) -> None:
        self.settings = settings
        self.master = master
        self.store = store
        self.force = force
        self.keys = Keys(settings.key_prefix)
        self.deadline = redis_deadline(settings)

    async def check(self, items: Sequence[DeadLetter]) -> Batch:
        """Step 1: which records are done already (their markers say so)."""
        todo: list[segment.Record] = []
        done: list[str] = []
        for dl in items:
            rec = with_identity(dl.record())
            event = Event.from_record(rec)
            is_done = await self.master.call(
                partial(ledger.is_done, keys=self.keys, event=event), deadline=self.deadline
            )
            if is_done:
                done.append(dl.record_id)
            if not is_done or self.force:
                todo.append(rec)
        return Batch(list(items), todo, done)

    async def clear(self, batch: Batch) -> None:
        """Step 2: clear the dead-markers; forced, the done-markers of the records too."""
        for rec in batch.todo:
            if self.force:
                call = partial(ledger.clear, keys=self.keys, event=Event.from_record(rec))
            else:
                call = partial(ledger.clear_dead, keys=self.keys, record_id=rec.id)
            await self.master.call(call, deadline=self.deadline)

    async def write(self, batch: Batch) -> str | None:
        """Step 3: the records to replay as a new segment; its key (None: nothing to write)."""
        if not batch.todo:
            return None
        name = segment.new_name(time.time())
        fresh = [
            segment.Record(segment.record_id(name, i), rec.received_at, rec.headers, rec.body)
            for i, rec in enumerate(batch.todo)
        ]
        key = segment.incoming_key(name)
        await self.store.put_segment(key, segment.encode(fresh))
        return key

    async def announce(self, key: str, n: int) -> None:
        """Step 4: announce the segment. If this fails, the sweeper announces it after its
        grace period, so the failure is not the replay's."""
        s = self.settings
        with contextlib.suppress(Exception):
            await self.master.call(
                partial(announce, stream=s.stream, key=key, n=n, maxlen=s.stream_maxlen),
                deadline=self.deadline,
            )

    async def delete(self, dl: DeadLetter) -> None:
        """Step 5: the dead-letter object goes (gone already is fine: a re-run)."""
        await self.store.delete(dl.key)

    async def run(self, items: Sequence[DeadLetter], progress: Progress | None = None) -> Report:
        report = Report()
        finished = 0
        for start in range(0, len(items), BATCH):
            batch = await self.check(items[start : start + BATCH])
            await self.clear(batch)
            key = await self.write(batch)
            if key is not None:
                await self.announce(key, len(batch.todo))
                report.segments.append(key)
            for dl in batch.items:
                await self.delete(dl)
                finished += 1
                if progress is not None:
                    progress(finished, len(items))
            done = set(batch.done)
            for dl in batch.items:
                if dl.record_id not in done:
                    report.replayed.append(dl.record_id)
                elif self.force:
                    report.forced.append(dl.record_id)
                else:
                    report.already_done.append(dl.record_id)
        return report


def with_identity(rec: segment.Record) -> segment.Record:
    """The record with a webhook id: its own, else (absent or empty) ``record:<its id>``, the
    done-marker the original had. Every copy a replay writes then shares that marker."""
    if Event.from_record(rec).webhook_id:
        return rec
    headers = {k: v for k, v in rec.headers.items() if k.lower() != H_WEBHOOK_ID}
    headers["X-Shopify-Webhook-Id"] = f"record:{rec.id}"
    return segment.Record(rec.id, rec.received_at, headers, rec.body)


async def replay(
    settings: WorkerSettings,
    master: MasterClient,
    store: Buffer,
    items: Sequence[DeadLetter],
    progress: Progress | None = None,
    *,
    force: bool = False,
) -> Report:
    """Replay ``items`` (see the module docstring); ``force`` runs done records again."""
    return await Replay(settings, master, store, force=force).run(items, progress)
