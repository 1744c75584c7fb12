"""The dead-letter prefix: list what kept failing, and replay it.

A replay writes the records again as new segments under ``incoming/`` and announces them, after
clearing their done- and dead-markers so they are processed again; then the dead-letter objects
go. A crash in between leaves the dead-letter object in place, so replaying again is safe (the
markers then say whether the first replay got through).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import WorkerSettings
from shopipe.errors import PermanentError
from shopipe.sentinel import MasterClient
from shopipe.stream import Keys, announce

from shopipe_worker import ledger
from shopipe_worker.events import Event
from shopipe_worker.processor import redis_deadline

BATCH = 100  # records per replayed segment


class BadDeadLetter(PermanentError):
    """A dead-letter object that is not what the worker writes."""


@dataclass(frozen=True)
class DeadLetter:
    key: str
    doc: dict[str, Any]

    @property
    def record_id(self) -> str:
        return str(self.doc.get("record_id", ""))

    @property
    def topic(self) -> str:
        return str(self.doc.get("topic", ""))

    def summary(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "topic": self.topic,
            "shop": self.doc.get("shop", ""),
            "attempts": self.doc.get("attempts"),
            "error": self.doc.get("error", ""),
            "dead_lettered_at": self.doc.get("dead_lettered_at"),
        }

    def record(self) -> segment.Record:
        """The original record (id still the old one)."""
        try:
            body = base64.b64decode(str(self.doc["body_base64"]), validate=True)
            headers = {str(k): str(v) for k, v in dict(self.doc["headers"]).items()}
            return segment.Record(self.record_id, float(self.doc["received_at"]), headers, body)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise BadDeadLetter(f"{self.key}: not a dead-letter record") from e


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
        dl = DeadLetter(obj.key, doc if isinstance(doc, dict) else {})
        if topic is None or dl.topic == topic:
            out.append(dl)
    return out


async def list_dead_segments(store: Buffer) -> list[str]:
    return [
        o.key
        for o in await store.list(segment.DEAD_SEGMENTS)
        if segment.is_segment_key(o.key, segment.DEAD_SEGMENTS)
    ]


Progress = Callable[[int, int], None]


async def replay(
    settings: WorkerSettings,
    master: MasterClient,
    store: Buffer,
    items: Sequence[DeadLetter],
    progress: Progress | None = None,
) -> list[str]:
    """Replay ``items``; returns the keys of the new segments."""
    keys = Keys(settings.key_prefix)
    deadline = redis_deadline(settings)
    written: list[str] = []
    done = 0
    for start in range(0, len(items), BATCH):
        batch = list(items[start : start + BATCH])
        originals = [dl.record() for dl in batch]
        for rec in originals:
            event = Event.from_record(rec)
            await master.call(partial(ledger.clear, keys=keys, event=event), deadline=deadline)
        name = segment.new_name(time.time())
        fresh = [
            segment.Record(segment.record_id(name, i), rec.received_at, rec.headers, rec.body)
            for i, rec in enumerate(originals)
        ]
        key = segment.incoming_key(name)
        await store.put_segment(key, segment.encode(fresh))
        # If this fails, the sweeper announces the segment after its grace period.
        with contextlib.suppress(Exception):
            await master.call(
                partial(
                    announce,
                    stream=settings.stream,
                    key=key,
                    n=len(fresh),
                    maxlen=settings.stream_maxlen,
                ),
                deadline=deadline,
            )
        for dl in batch:
            await store.delete(dl.key)
            done += 1
            if progress is not None:
                progress(done, len(items))
        written.append(key)
    return written
