"""How much work is left: the stream side (length, lag, pending) and the bucket side (segments
under ``incoming/`` and the oldest one's age). Used by the sweeper's gauges and ``shopipe
backlog``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe import segment
from shopipe.buffer import Buffer, ObjectInfo

from shopipe_worker import metrics as m

# Bounds every scan of the stream: past it, numbers are reported as "at least".
SCAN_CAP = 10_000


@dataclass(frozen=True)
class StreamBacklog:
    length: int
    lag: int
    pending: int
    last_delivered: str


@dataclass(frozen=True)
class Backlog:
    stream_length: int
    lag: int
    pending: int
    incoming_objects: int
    oldest_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def stream_backlog(r: Redis, stream: str, group: str) -> StreamBacklog:
    """Stream length, entries not yet delivered to ``group`` (lag) and entries pending."""
    length = int(await r.xlen(stream))
    try:
        groups = await r.xinfo_groups(stream)
    except rex.ResponseError:
        return StreamBacklog(length, length, 0, "0-0")  # no stream or no group yet
    for g in groups:
        if _s(g["name"]) != group:
            continue
        last = _s(g["last-delivered-id"])
        lag = g.get("lag")
        if lag is None:
            # Redis cannot tell after deletions in the range: count, bounded.
            lag = len(await r.xrange(stream, min="(" + last, max="+", count=SCAN_CAP) or [])
        return StreamBacklog(length, int(lag), int(g["pending"]), last)
    return StreamBacklog(length, length, 0, "0-0")


def incoming_summary(objects: list[ObjectInfo], now: float | None = None) -> tuple[int, float]:
    """(number of segments, age in seconds of the oldest) under incoming/."""
    keys = [o.key for o in objects if segment.is_segment_key(o.key)]
    if not keys:
        return 0, 0.0
    at = time.time() if now is None else now
    return len(keys), max(0.0, at - min(segment.time_of(k) for k in keys))


async def measure(r: Redis, store: Buffer, stream: str, group: str) -> Backlog:
    sb = await stream_backlog(r, stream, group)
    count, oldest = incoming_summary(await store.list(segment.INCOMING))
    return Backlog(sb.length, sb.lag, sb.pending, count, oldest)


def publish_stream(sb: StreamBacklog) -> None:
    m.STREAM_LAG.set(sb.lag)
    m.PENDING.set(sb.pending)


def publish_incoming(count: int, oldest: float) -> None:
    m.INCOMING_OBJECTS.set(count)
    m.OLDEST_SECONDS.set(oldest)
