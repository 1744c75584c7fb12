"""How much work is left: one measure for ``shopipe backlog``, the worker's gauges and the
operator's scaler.

Stream side: entries not yet delivered to the group (``lag``) and entries delivered but not
acknowledged (``pending``). The group's own ``lag`` (XINFO GROUPS) is entries-added minus
entries-read, two counters that go wrong after failovers and trims: after two graceful failovers a
new master reported a lag of ~946 with nothing pending and nothing in ``incoming/``, and the
operator believing it scaled from 1 to 4 idle workers. So the lag counter is never trusted: the
undelivered entries are counted, bounded by ``cap``, with XRANGE after the group's
last-delivered-id, which is what the workers will really read next. When the group is up to
date that range is empty and costs one round trip.

Bucket side: segments under ``incoming/`` (the source of truth: every entry undelivered or
pending names one) and the age of the oldest, from one listing of at most ``cap`` objects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from redis import exceptions as rex
from redis.asyncio import Redis

from shopipe import segment
from shopipe.stream import as_str

# Bounds every count: past it, numbers mean "at least this many".
SCAN_CAP = 10_000


class Listed(Protocol):
    @property
    def key(self) -> str: ...


class Lister(Protocol):
    """What the backlog needs of shopipe.buffer.Buffer."""

    async def list(self, prefix: str, *, limit: int | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class StreamBacklog:
    length: int
    lag: int  # undelivered entries, counted (at most the cap)
    pending: int
    last_delivered: str
    reported_lag: int | None = None  # the group's own counter, for diagnosis only


@dataclass(frozen=True)
class Backlog:
    stream_length: int
    lag: int
    pending: int
    incoming_objects: int
    oldest_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Counted in Redis: the entries themselves never cross the wire (10,000 of them cost a client
# 46 ms of CPU to receive and parse, the script's one integer 1 ms). Read-only, so it runs on a
# master at its memory limit as on a replica.
_COUNT = """#!lua flags=no-writes
return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
"""


async def undelivered(r: Redis, stream: str, last_delivered: str, cap: int) -> int:
    """Entries after ``last_delivered`` ("0-0": all), at most ``cap``."""
    low = "-" if last_delivered == "0-0" else "(" + last_delivered
    return int(await r.register_script(_COUNT)([stream], [low, cap]))  # EVALSHA


async def stream_backlog(r: Redis, stream: str, group: str, cap: int = SCAN_CAP) -> StreamBacklog:
    """Length, undelivered (counted) and pending entries of ``group`` on ``stream``. No stream
    is an empty one; no group yet means every entry is undelivered (groups start at 0)."""
    try:
        groups = await r.xinfo_groups(stream)
    except rex.ResponseError as e:
        if "no such key" in str(e).lower():
            return StreamBacklog(0, 0, 0, "0-0")
        raise
    length = int(await r.xlen(stream))
    for g in groups:
        info = {as_str(k): v for k, v in g.items()}
        if as_str(info.get("name", "")) != group:
            continue
        last = as_str(info.get("last-delivered-id") or "0-0")
        reported = info.get("lag")
        lag = await undelivered(r, stream, last, cap)
        return StreamBacklog(
            length,
            lag,
            int(info.get("pending") or 0),
            last,
            None if reported is None else int(reported),
        )
    return StreamBacklog(length, await undelivered(r, stream, "0-0", cap), 0, "0-0")


def incoming_summary(objects: Iterable[Listed], now: float | None = None) -> tuple[int, float]:
    """(number of segments, age in seconds of the oldest) among listed ``incoming/`` objects."""
    keys = [o.key for o in objects if segment.is_segment_key(o.key)]
    if not keys:
        return 0, 0.0
    at = time.time() if now is None else now
    return len(keys), max(0.0, at - min(segment.time_of(k) for k in keys))


async def incoming(lister: Lister, cap: int = SCAN_CAP) -> tuple[int, float]:
    """``incoming_summary`` of one listing of at most ``cap`` objects (oldest first)."""
    return incoming_summary(await lister.list(segment.INCOMING, limit=cap))


async def measure(
    r: Redis, lister: Lister, stream: str, group: str, cap: int = SCAN_CAP
) -> Backlog:
    sb = await stream_backlog(r, stream, group, cap)
    count, oldest = await incoming(lister, cap)
    return Backlog(sb.length, sb.lag, sb.pending, count, oldest)
