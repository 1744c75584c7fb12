"""Telling the operator when more workers cannot help: the whole backlog waits on routes at
their limits.

The operator scales on the stream's backlog, but the unread part of it (the lag) names only
segments: their topics are inside, unread, so it cannot tell a backlog a slow handler holds
back (more workers help) from one a destination's rate holds back (they would only wait in
line for the same slots). The workers know. A route is **saturated** while its deliveries
wait on its limits: a delivery the app took had waited ``max(1 s, 3 intervals)`` for its slot
(below its limits a slot comes within an interval or two; a lone wait of an interval is
chance, not a queue), a record was deferred for want of one, or the circuit is open. Each
worker notes it in ``<prefix>:fwd:saturated:<route>`` (TTL: ``HELD_SECONDS``, refreshed at most
once a second while it lasts; while the circuit is open, until the deferred records come back
to probe).

The backlog is **bound** (``Keys.forward_bound``, read by the operator's backlog probe) while
every route is saturated and every other handler's topic patterns are covered by a route's
(``state`` beside a route of ``*``, say): then every record that has work waits on a saturated
route, and a record with no handler at all is done the moment it is read. Any route not
saturated, or a handler whose topics no route takes, and a new worker might help: the lag
counts. The mark lives as long as the shortest route mark, so it lapses within
``HELD_SECONDS`` of a route's queue emptying; a probe that closes the circuit clears it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from shopipe.logs import get_logger
from shopipe.stream import Keys as StreamKeys

from shopipe_worker.forward.routes import Route
from shopipe_worker.forward.state import Keys
from shopipe_worker.registry import Registry, check_pattern

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)

# How long a route's queue is believed to last after a delivery waited in it.
HELD_SECONDS = 15.0
# A route's mark is refreshed at most this often by one worker (a write per waited delivery
# would double a saturated route's Redis writes for nothing).
NOTE_EVERY_SECONDS = 1.0
# A wait this long (or three rate intervals, when longer) means a queue, not chance.
QUEUE_SECONDS = 1.0


def covers(route_pattern: str, pattern: str) -> bool:
    """Every topic ``pattern`` matches, ``route_pattern`` matches too."""
    outer, inner = check_pattern(route_pattern), check_pattern(pattern)
    if outer == ("*",):
        return True
    if inner == ("*",) or len(outer) != len(inner):
        return False
    return all(o == "*" or o == i for o, i in zip(outer, inner, strict=True))


def all_forwarded(registry: Registry, routes: tuple[Route, ...]) -> bool:
    """Every handler other than the routes' takes only topics some route takes too."""
    route_patterns = [p for route in routes for p in route.topics]
    return all(
        any(covers(rp, pattern) for rp in route_patterns)
        for pattern, name in registry.patterns()
        if not name.startswith("forward:")
    )


def queue_seconds(route: Route) -> float:
    """The wait for a slot that says ``route`` is at its limits."""
    rate = route.rate_per_second
    return max(QUEUE_SECONDS, 3.0 / rate) if rate else QUEUE_SECONDS


class Saturation:
    """One worker's notes of its routes' saturation, and the bound mark they make."""

    def __init__(self, routes: tuple[Route, ...], registry: Registry) -> None:
        self.routes = routes
        self.registry = registry
        self._forwarded: bool | None = None  # known once every handler is registered
        self._next: dict[tuple[str, int], float] = {}

    def forwarded(self) -> bool:
        if self._forwarded is None:
            self._forwarded = all_forwarded(self.registry, self.routes)
        return self._forwarded

    async def note(self, r: Redis, prefix: str, route: str, seconds: float) -> None:
        """``route`` is saturated for about ``seconds``; mark the backlog bound when every
        route is. One round trip (two when it marks), at most once a second per route."""
        ms = int(seconds * 1000)
        now = time.monotonic()
        if self._next.get((route, ms), 0.0) > now:
            return
        self._next[(route, ms)] = now + NOTE_EVERY_SECONDS
        keys = Keys(prefix)
        try:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(keys.saturated(route), "1", px=ms)
                for other in self.routes:
                    pipe.pttl(keys.saturated(other.name))
                left = [int(v) for v in (await pipe.execute())[1:]]
            if self.forwarded() and all(v > 0 for v in left):
                await r.set(StreamKeys(prefix).forward_bound(), "1", px=min(left))
        except (RedisError, OSError) as e:
            # Advice to the operator only: a delivery or a deferral must not fail for it.
            log.warning("forward saturation not noted", extra={"error": type(e).__name__})

    async def clear(self, r: Redis, prefix: str, route: str) -> None:
        """``route`` took a delivery after its circuit was open: no longer saturated."""
        self._next = {k: v for k, v in self._next.items() if k[0] != route}
        try:
            await r.delete(Keys(prefix).saturated(route), StreamKeys(prefix).forward_bound())
        except (RedisError, OSError) as e:
            log.warning("forward saturation not cleared", extra={"error": type(e).__name__})
