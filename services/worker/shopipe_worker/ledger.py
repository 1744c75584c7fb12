"""Done-markers: a record's handlers take effect once, however often it is delivered.

A record is skipped when its delivery is done (``X-Shopify-Webhook-Id``, the same across Shopify's
retries) or its event is done for this shop and topic (``X-Shopify-Event-Id``: two subscriptions
to one topic). One merchant action gives every topic the same event id, so the topic is part of
the event key: different topics are different work.

The check, the handlers' Redis writes and the markers form one optimistic transaction: WATCH the
markers, check them, let the handlers queue writes on the MULTI, then EXEC them with the SETs of
the markers. Two workers racing on one record (a reclaimed entry, a re-announced segment) cannot
both EXEC: the loser's EXEC is refused and its check then finds the winner's marker. A crash
before EXEC applies nothing; after it, everything and the markers together.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis import exceptions as rex
from redis.exceptions import WatchError
from shopipe.errors import TransientError
from shopipe.stream import Keys

from shopipe_worker.events import Event
from shopipe_worker.registry import Context, Handler

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from shopipe.buffer import Buffer

# Another worker won the race, or the connection broke while watching: each round checks again.
_ROUNDS = 5


class Outcome(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    DEAD = "dead"  # dead-lettered earlier; not retried until replayed


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    handler_seconds: float = 0.0


def marker_keys(keys: Keys, event: Event) -> list[str]:
    """The done-markers of ``event``. Without a webhook id the record id stands in for it."""
    out = [keys.done_webhook(event.webhook_id or f"record:{event.record_id}")]
    if event.shop and event.topic and event.event_id:
        out.append(keys.done_event(event.shop, event.topic, event.event_id))
    return out


async def apply(
    r: Redis,
    keys: Keys,
    event: Event,
    handlers: Sequence[tuple[str, Handler]],
    *,
    ttl: int,
    store: Buffer | None = None,
) -> Result:
    """Run ``handlers`` for ``event`` unless it is done or dead; their errors propagate and
    leave nothing applied."""
    markers = marker_keys(keys, event)
    dead = keys.dead(event.record_id)
    for _ in range(_ROUNDS):
        async with r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(*markers, dead)
                found = await pipe.mget([*markers, dead])
            except WatchError as e:
                # redis-py's word for "the connection broke while watching": let the master
                # client resolve the master again rather than count a handler failure.
                raise rex.ConnectionError("connection lost while watching markers") from e
            if any(v is not None for v in found[:-1]):
                return Result(Outcome.DUPLICATE)
            if found[-1] is not None:
                return Result(Outcome.DEAD)
            pipe.multi()
            ctx = Context(redis=r, tx=pipe, keys=keys, store=store)
            started = time.perf_counter()
            for _name, handler in handlers:
                await handler(event, ctx)
            spent = time.perf_counter() - started
            for key in markers:
                pipe.set(key, event.record_id, ex=ttl)
            try:
                await pipe.execute()
            except WatchError:
                continue
            return Result(Outcome.PROCESSED, spent)
    raise TransientError("record: done-marker transaction kept being interrupted")


async def is_settled(r: Redis, keys: Keys, event: Event) -> bool:
    """True when the record needs no work: done or dead-lettered."""
    values = await r.mget([*marker_keys(keys, event), keys.dead(event.record_id)])
    return any(v is not None for v in values)


async def mark_dead(r: Redis, keys: Keys, record_id: str, *, ttl: int) -> None:
    await r.set(keys.dead(record_id), str(int(time.time())), ex=ttl)


async def clear(r: Redis, keys: Keys, event: Event) -> int:
    """Forget that ``event`` was done or dead so a replay processes it again."""
    return int(await r.delete(*marker_keys(keys, event), keys.dead(event.record_id)))
