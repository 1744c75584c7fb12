"""What the forward handler keeps in Redis, per route and per record.

- ``<prefix>:fwd:disabled:<route>`` (string, no expiry): JSON, why and when the route was
  disabled (its destination answered 410);
- ``<prefix>:fwd:pause:<route>`` (string, TTL): a ``Retry-After`` asked for a pause; nothing is
  sent on the route before it expires;
- ``<prefix>:fwd:leases:<route>`` (sorted set) and ``<prefix>:fwd:rate:<route>`` (string): the
  route's limits (``limits.py``);
- ``<prefix>:fwd:sent:<route>:<delivery>`` (string): delivered (2xx); a retry of the record, or
  a replay of it, skips the route;
- ``<prefix>:fwd:tries:<route>:<delivery>`` (string): deliveries tried (``X-Shopipe-Attempt``);
- ``<prefix>:fwd:saturated:<route>`` (string, TTL): the route is at its limits or its circuit
  is open (``saturation.py``).

``<delivery>`` is ``<shop>:<topic>:<webhook id>`` (``record:<record id>`` without a webhook id),
as in the done-markers: the same across Shopify's retries and shopipe's replays.

The sent and tries keys live as long as the done-markers (``SHOPIPE_DEDUP_TTL_SECONDS``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shopipe_worker.events import Event

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True)
class Keys:
    prefix: str

    def disabled(self, route: str) -> str:
        return f"{self.prefix}:fwd:disabled:{route}"

    def pause(self, route: str) -> str:
        return f"{self.prefix}:fwd:pause:{route}"

    def leases(self, route: str) -> str:
        return f"{self.prefix}:fwd:leases:{route}"

    def rate(self, route: str) -> str:
        return f"{self.prefix}:fwd:rate:{route}"

    def sent(self, route: str, delivery: str) -> str:
        return f"{self.prefix}:fwd:sent:{route}:{delivery}"

    def tries(self, route: str, delivery: str) -> str:
        return f"{self.prefix}:fwd:tries:{route}:{delivery}"

    def sending(self, route: str, delivery: str) -> str:
        """The lease of the delivery of this webhook under way, if one is (limits.py)."""
        return f"{self.prefix}:fwd:sending:{route}:{delivery}"

    def saturated(self, route: str) -> str:
        return f"{self.prefix}:fwd:saturated:{route}"


def delivery_of(event: Event) -> str:
    """The delivery a record is of: Shopify's retries and shopipe's replays share it."""
    return f"{event.shop}:{event.topic}:{event.webhook_id or 'record:' + event.record_id}"


async def pause(r: Redis, keys: Keys, route: str, seconds: float) -> None:
    """No delivery on ``route`` for ``seconds`` (a Retry-After); a longer pause stays."""
    ms = int(seconds * 1000)
    if ms > 0:
        current = await r.pttl(keys.pause(route))
        if current < ms:
            await r.set(keys.pause(route), "1", px=ms)


async def disable(r: Redis, keys: Keys, route: str, status: int) -> bool:
    """Disable ``route``; True when this call did it (not already disabled)."""
    doc = json.dumps({"status": status, "at": time.time()})
    return bool(await r.set(keys.disabled(route), doc, nx=True))


async def enable(r: Redis, keys: Keys, route: str) -> bool:
    """Re-enable ``route``; True when it was disabled."""
    return bool(await r.delete(keys.disabled(route)))


async def disabled_routes(r: Redis, keys: Keys, routes: list[str]) -> dict[str, Any]:
    """The disabled ones of ``routes`` with why and when."""
    if not routes:
        return {}
    raw = await r.mget([keys.disabled(name) for name in routes])
    return {name: json.loads(v) for name, v in zip(routes, raw, strict=True) if v is not None}


async def report(r: Redis, keys: Keys, routes: list[str]) -> dict[str, Any]:
    """Each route's state for `shopipe forward status` and /status."""
    disabled = await disabled_routes(r, keys, routes)
    async with r.pipeline(transaction=False) as pipe:
        for name in routes:
            pipe.pttl(keys.pause(name))
        pauses = await pipe.execute()
    return {
        name: {
            "state": "disabled" if name in disabled else "enabled",
            "disabled": disabled.get(name),
            "paused_seconds": max(0, int(ms)) / 1000.0,
        }
        for name, ms in zip(routes, pauses, strict=True)
    }
