"""A route's limits, shared by every worker: deliveries in flight and deliveries per second.

One Lua script decides atomically on the master, so two workers cannot both take the last slot:
- in flight: a sorted set of leases scored by their expiry. A delivery takes a lease and gives
  it back when it ends; a worker that dies holding one loses it at expiry (the route's timeout
  plus a margin: no delivery outlives its timeout);
- rate: GCRA (the generic cell rate algorithm, one timestamp per route): deliveries start at
  least ``1 / rate`` seconds apart, with no burst, across all workers;
- a ``Retry-After`` pause (``state.pause``) holds every start until it expires.
Time is the master's (``TIME``), so workers' clocks do not matter.

Why a script and not typed calls: the check and the take must be one step; WATCH/MULTI would
retry under contention exactly when the limit is busiest.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import TYPE_CHECKING

from shopipe.errors import Deferred
from shopipe.logs import get_logger

from shopipe_worker.forward.routes import Route
from shopipe_worker.forward.state import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)

# Margin of a lease past the route's timeout: the delivery has ended by then, whatever happened.
LEASE_MARGIN_SECONDS = 5.0
# Longest a delivery waits for a slot before its record is deferred (retried later, counting no
# attempt): the segment's other records and the worker's other segments are not held longer.
WAIT_SECONDS = 10.0
# While every slot is taken there is no known wait: look again after this (jittered).
FULL_POLL_SECONDS = 0.02

# KEYS: leases, rate timestamp, pause. ARGV: lease id, max in flight, interval ms (0: no rate),
# lease ms. Returns 0 (taken), a wait in ms, or -1 (every slot taken).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then return paused end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
local interval = tonumber(ARGV[3])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat > now then return tat - now end
  redis.call('SET', KEYS[2], now + interval, 'PX', interval + 1000)
end
local lease = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
return 0
"""


class Throttled(Deferred):
    """No slot within WAIT_SECONDS: the route is at its limits; the record waits its turn."""


class Lease:
    def __init__(self, r: Redis, key: str, member: str) -> None:
        self._r = r
        self._key = key
        self._member = member

    async def release(self) -> None:
        try:
            await self._r.zrem(self._key, self._member)
        except Exception:
            # Redis away: the lease expires on its own; the delivery's outcome matters more.
            log.warning("forward lease not released; it expires", extra={"lease": self._key})


async def acquire(r: Redis, keys: Keys, route: Route, wait: float = WAIT_SECONDS) -> Lease:
    """A slot on ``route`` (in flight and rate); Throttled after ``wait`` seconds without one."""
    member = uuid.uuid4().hex
    interval_ms = int(1000 / route.rate_per_second) if route.rate_per_second else 0
    lease_ms = int((route.timeout_seconds + LEASE_MARGIN_SECONDS) * 1000)
    leases = keys.leases(route.name)
    script_keys = [leases, keys.rate(route.name), keys.pause(route.name)]
    deadline = time.monotonic() + wait
    while True:
        got = int(
            await r.eval(
                _ACQUIRE,
                3,
                *script_keys,
                member,
                str(route.max_in_flight),
                str(interval_ms),
                str(lease_ms),
            )
        )
        if got == 0:
            return Lease(r, leases, member)
        pause = FULL_POLL_SECONDS * random.uniform(0.5, 1.5) if got < 0 else got / 1000.0
        left = deadline - time.monotonic()
        if left <= 0 or (got > 0 and pause > left):
            raise Throttled(f"route {route.name}: at its limits")
        await asyncio.sleep(min(pause, left))
