"""The scaler's backlog: stream lag + pending entries + segments under ``incoming/``, measured
by ``shopipe.backlog`` (the same measure as ``shopipe backlog``, true after failovers), less the
segments with records waiting on a forward destination at its limits or with its circuit open
(``Keys.forward_waiting``, written by the workers): more workers cannot speed those up. They
are pending and under ``incoming/``, so they leave both counts.

The unread lag is not known to wait on anything: its topics are in the segments, unread. So it
leaves the measure only while the workers say the whole backlog is bound to destinations at
their limits (``Keys.forward_bound``): every forward route saturated (a delivery waited a
second or more for a slot, a record was deferred for one, or its circuit is open) and every
handler's topics also forwarded, so every record waits on a saturated route and a new worker
would only wait too. Then the lag and its segments under ``incoming/`` are left out, and the
operator scales on what the workers hold and are not waiting on. That may let workers go after
the down window; if the rest stop saturating a route, its mark lapses within seconds and the lag
counts again. Reading the lag's segments to learn their topics would cost the bucket a GET per
segment per reconcile: the workers' view is free.

A missing stream or group is an empty stream (0), never unknown. What cannot be measured
(Redis or the bucket not answering) is None, and the scaler then leaves the replicas alone.
The bucket listing costs requests, so it is sampled at most every ``listing_interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe import backlog
from shopipe.backlog import Lister
from shopipe.errors import ShopipeError
from shopipe.logs import get_logger

__all__ = ["Backlog", "BacklogProbe", "Lister"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Backlog:
    lag: int | None
    pending: int | None
    incoming: int | None
    waiting: int = 0  # segments waiting on a forward destination
    bound: bool = False  # the whole backlog waits on saturated forward routes

    @property
    def total(self) -> int | None:
        if self.lag is None or self.pending is None or self.incoming is None:
            return None
        pending = max(0, self.pending - self.waiting)
        if self.bound:
            return pending + max(0, self.incoming - self.waiting - self.lag)
        return self.lag + pending + max(0, self.incoming - self.waiting)


class BacklogProbe:
    """Measures the backlog; ``cap`` bounds every count (enough to saturate the scaler)."""

    def __init__(
        self,
        stream: str,
        group: str,
        lister: Lister | None,
        listing_interval: float,
        cap: int,
        clock: Callable[[], float] = time.monotonic,
        waiting_key: str | None = None,
        bound_key: str | None = None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.lister = lister
        self.listing_interval = listing_interval
        self.cap = cap
        self.clock = clock
        self.waiting_key = waiting_key
        self.bound_key = bound_key
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
            self._incoming, _ = await backlog.incoming(self.lister, self.cap)
        except ShopipeError as e:
            log.warning("cannot list incoming/", extra={"error": type(e).__name__})
            self._incoming = None
        return self._incoming

    async def measure(self, r: Redis | None) -> Backlog:
        """``r``: a client on the current master, None when the master is unknown."""
        lag: int | None = None
        pending: int | None = None
        waiting = 0
        bound = False
        if r is not None:
            try:
                sb = await backlog.stream_backlog(r, self.stream, self.group, self.cap)
                lag, pending = sb.lag, sb.pending
                if self.waiting_key is not None:
                    # Entries are scored by when they go stale (the workers' wall clock).
                    now_ms = int(time.time() * 1000)
                    waiting = int(await r.zcount(self.waiting_key, now_ms, "+inf"))
                if self.bound_key is not None:
                    bound = bool(await r.exists(self.bound_key))
            except (rex.RedisError, OSError) as e:
                log.warning("cannot measure the stream", extra={"error": type(e).__name__})
        self.last = Backlog(lag, pending, await self.incoming(), waiting, bound)
        return self.last
