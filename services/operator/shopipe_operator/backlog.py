"""Measuring the backlog: stream lag + pending entries + segments under ``incoming/``.

A missing stream or group is an empty stream (0), never unknown. What cannot be measured
(Redis or the bucket not answering) is None, and the scaler then leaves the replicas alone.
The bucket listing costs requests, so it is sampled at most every ``listing_interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe.errors import ShopipeError
from shopipe.logs import get_logger

log = get_logger(__name__)
INCOMING = "incoming/"


class Lister(Protocol):
    """What the backlog needs of shopipe.buffer.Buffer."""

    async def list(self, prefix: str, *, limit: int | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class Backlog:
    lag: int | None
    pending: int | None
    incoming: int | None

    @property
    def total(self) -> int | None:
        if self.lag is None or self.pending is None or self.incoming is None:
            return None
        return self.lag + self.pending + self.incoming


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def stream_backlog(r: Redis, stream: str, group: str, cap: int) -> tuple[int, int]:
    """(lag, pending) of ``group`` on ``stream``; (0, 0) when either is missing.

    XINFO GROUPS gives ``lag`` on Redis 7+, but null when it cannot be computed (entries deleted
    or trimmed in the range); then count the undelivered entries, at most ``cap`` of them:
    enough to saturate the scaler, bounded so one measure cannot read a whole huge stream.
    """
    try:
        groups = await r.xinfo_groups(stream)
    except rex.ResponseError as e:
        if "no such key" in str(e).lower():
            return 0, 0
        raise
    for g in groups:
        info = {_s(k): v for k, v in g.items()}
        if _s(info.get("name", "")) != group:
            continue
        pending = int(info.get("pending") or 0)
        lag = info.get("lag")
        if lag is None:
            last = _s(info.get("last-delivered-id") or "0-0")
            entries = await r.xrange(stream, min=f"({last}", max="+", count=cap)
            return len(entries or []), pending
        return int(lag), pending
    return 0, 0


class BacklogProbe:
    """Measures the backlog; ``redis`` runs a function on the master (or raises)."""

    def __init__(
        self,
        stream: str,
        group: str,
        lister: Lister | None,
        listing_interval: float,
        cap: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.group = group
        self.lister = lister
        self.listing_interval = listing_interval
        self.cap = cap
        self.clock = clock
        self._listed_at: float | None = None
        self._incoming: int | None = None
        self.last: Backlog | None = None

    async def incoming(self) -> int | None:
        if self.lister is None:
            return 0
        now = self.clock()
        if self._listed_at is not None and now - self._listed_at < self.listing_interval:
            return self._incoming
        self._listed_at = now
        try:
            self._incoming = len(await self.lister.list(INCOMING, limit=self.cap))
        except ShopipeError as e:
            log.warning("cannot list incoming/", extra={"error": type(e).__name__})
            self._incoming = None
        return self._incoming

    async def measure(self, r: Redis | None) -> Backlog:
        """``r``: a client on the current master, None when the master is unknown."""
        lag: int | None = None
        pending: int | None = None
        if r is not None:
            try:
                lag, pending = await stream_backlog(r, self.stream, self.group, self.cap)
            except (rex.RedisError, OSError) as e:
                log.warning("cannot measure the stream", extra={"error": type(e).__name__})
        self.last = Backlog(lag, pending, await self.incoming())
        return self.last
