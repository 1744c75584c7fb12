"""A circuit breaker per route, shared by every worker (state in Redis, the master's clock).

Closed, deliveries go. After ``breaker_failures`` transient failures in a row (timeouts,
connection errors, 408/425/429/5xx) it opens: nothing is sent, and the records are deferred
(retried later without counting an attempt, so an outage never uses up their attempts).
While open, one delivery every ``breaker_probe_seconds``, taken by whichever worker asks first
(``limits.start``), is a probe; its success closes the breaker, its failure keeps it open. Any
answer that is not transient (2xx, and also 4xx: the destination is up) counts as a success.

Key ``<prefix>:fwd:breaker:<route>``, a hash: ``failures`` in a row, ``opened_at`` and
``probe_at`` (epoch ms); it expires a day after its last change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shopipe.errors import Deferred

from shopipe_worker.forward.routes import Route

if TYPE_CHECKING:
    from redis.asyncio import Redis

TTL_SECONDS = 24 * 3600

# KEYS: breaker. ARGV: threshold, probe ms, ttl s. Counts one failure; the one that reaches
# the threshold opens the breaker. Returns the failures in a row.
_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures == tonumber(ARGV[1]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'opened_at', now, 'probe_at', now + tonumber(ARGV[2]))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return failures
"""


class CircuitOpen(Deferred):
    """The route's breaker is open: the record waits (no attempt used) until a probe closes it."""


def key(prefix: str, route: str) -> str:
    return f"{prefix}:fwd:breaker:{route}"


def _probe_ms(route: Route) -> int:
    return int(route.breaker_probe_seconds * 1000)


async def failed(r: Redis, prefix: str, route: Route) -> int:
    """Count a transient failure; the failures in a row now."""
    args = (str(route.breaker_failures), str(_probe_ms(route)), str(TTL_SECONDS))
    return int(await r.register_script(_FAIL)([key(prefix, route.name)], args))  # EVALSHA


async def succeeded(r: Redis, prefix: str, route: Route, failures: int) -> None:
    """The destination answered: the run of ``failures`` ends (no write when there was none)."""
    if failures:
        await r.delete(key(prefix, route.name))


async def states(r: Redis, prefix: str, routes: list[Route]) -> dict[str, dict[str, float]]:
    """Each route's breaker: ``open`` (1 or 0) and ``failures`` in a row, for /status."""
    out: dict[str, dict[str, float]] = {}
    for route in routes:
        raw = await r.hget(key(prefix, route.name), "failures")
        failures = int(raw or 0)
        out[route.name] = {
            "open": float(failures >= route.breaker_failures),
            "failures": float(failures),
        }
    return out
