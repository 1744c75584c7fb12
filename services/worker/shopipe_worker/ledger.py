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

Markers expire after ``SHOPIPE_DEDUP_TTL_SECONDS`` (24 h): they only have to outlive Shopify's
retries of one delivery (8 tries over 4 h, ``shopipe.shopify.RETRY_WINDOW_SECONDS``) plus the
backlog that may delay processing the last of them; config refuses anything below that. Each
webhook holds about 350 B of Redis for that long, so the TTL sets most of Redis's size.
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
from shopipe.sentinel import master_lost
from shopipe.stream import Keys

from shopipe_worker.events import Event
from shopipe_worker.registry import Context, Handler

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from shopipe.buffer import Buffer
    from shopipe.config import WorkerSettings

# Another worker won the race, or the connection broke while watching: each round checks again.
_ROUNDS = 5
# Handler time after which a batch of records is committed (see apply_many).
BATCH_BUDGET = 0.05


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
    out = [
        keys.done_webhook(event.shop, event.topic, event.webhook_id or f"record:{event.record_id}")
    ]
    if event.shop and event.topic and event.event_id:
        out.append(keys.done_event(event.shop, event.topic, event.event_id))
    return out


Work = tuple[Event, Sequence[tuple[str, Handler]]]


async def apply(
    r: Redis,
    keys: Keys,
    event: Event,
    handlers: Sequence[tuple[str, Handler]],
    *,
    ttl: int,
    store: Buffer | None = None,
    settings: WorkerSettings,
) -> Result:
    """Run ``handlers`` for ``event`` unless it is done or dead; their errors propagate and
    leave nothing applied."""
    (got,) = await apply_many(r, keys, [(event, handlers)], ttl=ttl, store=store, settings=settings)
    if isinstance(got, Exception):
        raise got
    return got


async def apply_many(
    r: Redis,
    keys: Keys,
    work: Sequence[Work],
    *,
    ttl: int,
    store: Buffer | None = None,
    budget: float = BATCH_BUDGET,
    settings: WorkerSettings,
) -> list[Result | Exception]:
    """``apply`` for several records in one transaction: one WATCH, one MGET and one EXEC for
    all of them instead of three round trips per record (a segment's records, in the worker).

    Returns the results of a prefix of ``work`` (at least one record): once the handlers have
    spent ``budget`` seconds, the transaction is committed and the caller applies the rest in
    another. So slow handlers commit record by record, as a single transaction would, and a
    crash loses at most ``budget`` of handler work; fast ones share the round trips.

    Each record gets its Result, or the exception its handlers raised: that record's queued
    writes are taken back out of the transaction, so it applies nothing while the others apply.
    A record whose marker an earlier record of the same batch claims (Shopify sent it twice) is
    a duplicate. Errors of Redis itself propagate (nothing applied): the caller retries."""
    plan = [(marker_keys(keys, event), keys.dead(event.record_id)) for event, _ in work]
    watched = list(dict.fromkeys(k for markers, dead in plan for k in (*markers, dead)))
    for _ in range(_ROUNDS):
        async with r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(*watched)
                values = dict(zip(watched, await pipe.mget(watched), strict=True))
            except WatchError as e:
                # redis-py's word for "the connection broke while watching": let the master
                # client resolve the master again rather than count a handler failure.
                raise rex.ConnectionError("connection lost while watching markers") from e
            pipe.multi()
            ctx = Context(redis=r, tx=pipe, keys=keys, store=store, settings=settings)
            claimed: set[str] = set()
            results: list[Result | Exception] = []
            spent_total = 0.0
            for (event, handlers), (markers, dead) in zip(work, plan, strict=True):
                if results and spent_total >= budget:
                    break  # at least one record per transaction, so callers always advance
                if any(values[k] is not None or k in claimed for k in markers):
                    results.append(Result(Outcome.DUPLICATE))
                    continue
                if values[dead] is not None:
                    results.append(Result(Outcome.DEAD))
                    continue
                queued = len(pipe.command_stack)
                started = time.perf_counter()
                try:
                    for _name, handler in handlers:
                        await handler(event, ctx)
                except Exception as e:
                    if master_lost(e):
                        raise  # Redis went away under the handler: the batch is retried
                    del pipe.command_stack[queued:]  # this record applies nothing
                    results.append(e)
                    spent_total += time.perf_counter() - started
                    continue
                spent = time.perf_counter() - started
                spent_total += spent
                for key in markers:
                    pipe.set(key, event.record_id, ex=ttl)
                claimed.update(markers)
                results.append(Result(Outcome.PROCESSED, spent))
            if not pipe.command_stack:
                return results  # nothing to write (all done, dead or failed)
            try:
                await pipe.execute()
            except WatchError:
                continue
            return results
    raise TransientError("records: done-marker transaction kept being interrupted")


async def is_settled(r: Redis, keys: Keys, event: Event) -> bool:
    """True when the record needs no work: done or dead-lettered."""
    values = await r.mget([*marker_keys(keys, event), keys.dead(event.record_id)])
    return any(v is not None for v in values)


async def mark_dead(r: Redis, keys: Keys, record_id: str, *, ttl: int) -> None:
    await r.set(keys.dead(record_id), str(int(time.time())), ex=ttl)


async def is_done(r: Redis, keys: Keys, event: Event) -> bool:
    """True when a delivery of ``event`` (this record, Shopify's retry, a replay) took effect."""
    return any(v is not None for v in await r.mget(marker_keys(keys, event)))


async def clear_dead(r: Redis, keys: Keys, record_id: str) -> int:
    """Forget that the record was dead-lettered; its done-markers stay (a replay keeps them)."""
    return int(await r.delete(keys.dead(record_id)))


async def clear(r: Redis, keys: Keys, event: Event) -> int:
    """Forget that ``event`` was done or dead, so it takes effect again: only for a replay the
    operator forced (`shopipe dlq replay --force`)."""
    return int(await r.delete(*marker_keys(keys, event), keys.dead(event.record_id)))
