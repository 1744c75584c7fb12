"""The gate of a route, shared by every worker: may this delivery start now?

One Lua script decides atomically on the master, in one round trip per try:
- the webhook was delivered on this route already (a retry of the record, a replay): skip;
- the route is disabled (a 410): refuse;
- the circuit breaker (``breaker.py``) is open: wait, unless this caller takes the probe;
- a ``Retry-After`` pause holds every start until it expires;
- in flight: a sorted set of leases scored by their expiry. A delivery takes a lease and gives
  it back when it ends; a worker that dies holding one loses it at expiry (the route's timeout
  plus a margin: no delivery outlives its timeout);
- rate: GCRA (the generic cell rate algorithm, one timestamp per route): deliveries start at
  least ``1 / rate`` seconds apart, with no burst, across all workers;
- one delivery of a webhook at a time: while another worker is sending it (a worker that took
  over the record of one paused past the claim threshold), the caller waits for its outcome
  (then: sent already) instead of sending it a second time;
- then it counts the try (``X-Shopipe-Attempt``).
Time is the master's (``TIME``), so workers' clocks do not matter. Why a script and not typed
calls: the checks and the take must be one step (WATCH/MULTI would retry under contention
exactly when the limit is busiest), and one round trip instead of six per delivery is most of
a worker's cost of forwarding.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shopipe.errors import Deferred
from shopipe.logs import get_logger

from shopipe_worker.forward import breaker
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

# KEYS: sent, disabled, breaker, pause, leases, rate, tries, sending.
# ARGV: lease id, max in flight, interval ms (0: no rate), lease ms, breaker threshold,
# probe ms, tries ttl s.
# Returns {code, value, failures in a row}: code 0 go / 1 go as the breaker's probe (value: the
# try's number), 2 sent already, 3 disabled, 4 breaker open (value: ms to the next probe),
# 5 wait (value: ms, a pause or the rate), 6 every slot taken, 7 being sent by another caller.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {2, 0, 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {3, 0, 0} end
if redis.call('EXISTS', KEYS[8]) == 1 then return {7, 0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = tonumber(redis.call('HGET', KEYS[3], 'failures') or '0')
local probe = 0
if failures >= tonumber(ARGV[5]) then
  local probe_at = tonumber(redis.call('HGET', KEYS[3], 'probe_at') or '0')
  if now < probe_at then return {4, probe_at - now, failures} end
  probe = 1
end
local paused = redis.call('PTTL', KEYS[4])
if paused > 0 then return {5, paused, failures} end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[2]) then return {6, 0, failures} end
local interval = tonumber(ARGV[3])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[6]) or '0')
  if tat > now then return {5, tat - now, failures} end
  redis.call('SET', KEYS[6], now + interval, 'PX', interval + 1000)
end
if probe == 1 then redis.call('HSET', KEYS[3], 'probe_at', now + tonumber(ARGV[6])) end
local lease = tonumber(ARGV[4])
redis.call('ZADD', KEYS[5], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[5], lease * 2)
redis.call('SET', KEYS[8], ARGV[1], 'PX', lease)
local attempt = redis.call('INCR', KEYS[7])
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[7]))
return {probe, attempt, failures}
"""


# KEYS: leases, sent, tries, waiting, breaker, sending. ARGV: lease id, sent ttl s, segment, 1 to
# end a run of failures. A delivery that took: its slot back, the webhook marked sent (which
# stops any re-send, so its try count goes: it would hold a key per webhook for a day), its
# segment off the waiting set, the webhook's sending mark gone. One command, not a pipeline.
_DELIVERED = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[5]) end
if redis.call('GET', KEYS[6]) == ARGV[1] then redis.call('DEL', KEYS[6]) end
return 1
"""

# KEYS: leases, sending. ARGV: lease id. A delivery that did not take: its slot back, and the
# webhook free for the next try (unless its lease expired and another caller's began).
_ENDED = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


class Throttled(Deferred):
    """No slot within WAIT_SECONDS: the route is at its limits; the record waits its turn."""


class Verdict(enum.Enum):
    SENT = "sent"  # delivered on this route already: nothing to do
    DISABLED = "disabled"


@dataclass(frozen=True)
class Lease:
    """A started delivery: its slot, which try it is, and whether it is the breaker's probe."""

    r: Redis
    keys: Keys
    route: str
    delivery: str
    member: str
    attempt: int
    probe: bool
    failures: int  # in a row, as it started

    async def end(self, delivered: bool, sent_ttl: int, waiting: tuple[str, str]) -> None:
        """Give the slot back; when ``delivered``, mark the webhook sent, end a run of failures
        and take the segment off the waiting set (``waiting``: its key and the segment). One
        round trip."""
        try:
            if delivered:
                keys = [
                    self.keys.leases(self.route),
                    self.keys.sent(self.route, self.delivery),
                    self.keys.tries(self.route, self.delivery),
                    waiting[0],
                    breaker.key(self.keys.prefix, self.route),
                    self.keys.sending(self.route, self.delivery),
                ]
                args = [self.member, str(sent_ttl), waiting[1], "1" if self.failures else "0"]
                await self.r.register_script(_DELIVERED)(keys, args)
            else:
                keys = [self.keys.leases(self.route), self.keys.sending(self.route, self.delivery)]
                await self.r.register_script(_ENDED)(keys, [self.member])
        except Exception:
            if delivered:
                raise  # the sent mark matters: the record is retried (and re-delivered)
            # Redis away: the lease expires on its own; the delivery's outcome matters more.
            log.warning("forward lease not released; it expires", extra={"route": self.route})


async def start(
    r: Redis, keys: Keys, route: Route, delivery: str, ttl: int, wait: float = WAIT_SECONDS
) -> Lease | Verdict:
    """A Lease to deliver ``delivery`` on ``route`` now, or SENT / DISABLED; CircuitOpen while
    the breaker is open, Throttled after ``wait`` seconds without a slot."""
    member = uuid.uuid4().hex
    name = route.name
    interval_ms = int(1000 / route.rate_per_second) if route.rate_per_second else 0
    lease_ms = int((route.timeout_seconds + LEASE_MARGIN_SECONDS) * 1000)
    script_keys = [
        keys.sent(name, delivery),
        keys.disabled(name),
        breaker.key(keys.prefix, name),
        keys.pause(name),
        keys.leases(name),
        keys.rate(name),
        keys.tries(name, delivery),
        keys.sending(name, delivery),
    ]
    args = [
        member,
        str(route.max_in_flight),
        str(interval_ms),
        str(lease_ms),
        str(route.breaker_failures),
        str(int(route.breaker_probe_seconds * 1000)),
        str(ttl),
    ]
    deadline = time.monotonic() + wait
    # EVALSHA: the script's 1.3 KB are sent (and hashed by Redis) only after a NOSCRIPT (a new
    # master, a restart), not with every delivery.
    script = r.register_script(_START)
    while True:
        code, value, failures = await script(script_keys, args)
        code, value, failures = int(code), int(value), int(failures)
        if code in (0, 1):
            return Lease(r, keys, name, delivery, member, value, code == 1, failures)
        if code == 2:
            return Verdict.SENT
        if code == 3:
            return Verdict.DISABLED
        if code == 4:
            raise breaker.CircuitOpen(f"route {name}: circuit open")
        pause = value / 1000.0 if code == 5 else FULL_POLL_SECONDS * random.uniform(0.5, 1.5)
        left = deadline - time.monotonic()
        if left <= 0 or pause > left:
            raise Throttled(f"route {name}: at its limits")
        await asyncio.sleep(pause)


async def note_waiting(r: Redis, key: str, segment: str, seconds: float) -> None:
    """``segment`` waits on a destination for about ``seconds`` (until its retry comes back):
    the operator leaves it out of the backlog it scales on. Stale entries are dropped here."""
    now_ms = int(time.time() * 1000)
    async with r.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {segment: now_ms + int(seconds * 1000)})
        pipe.zremrangebyscore(key, "-inf", now_ms)
        await pipe.execute()
