"""A shop's objects in the bucket, found without listing the bucket, and their erasure.

Every object that holds a shop's webhook bodies outside ``incoming/`` is entered in a per-shop
index before it is written: ``index/shops/<shop>/<object key>``, an empty object. ``shop/redact``
lists only ``index/shops/<shop>/`` and erases what it names:

- ``dead-letter/<record id>.json``: removed;
- ``processed/<segment>``: the shop's records are cut out (the segment is rewritten with the
  others' records), or the whole segment goes when it held only that shop's.

Why an index in the bucket and not a Redis set: it is as durable as the objects it points to
(a Redis failover can lose the last writes it had not replicated, and an object missing from
the index would never be erased), it costs Redis no memory, and it is written before its
object, so it is never behind. An entry whose object is gone is simply removed. Reports under
``compliance/<shop>/`` carry the shop in their key already and are listed by that prefix.

The shop domain in a key was checked against a strict pattern (``shopify.is_shop``): no ``/``,
so an entry cannot escape its shop's prefix. Records are attributed by their header's shop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from redis.exceptions import LockError
from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.errors import TransientError
from shopipe.shopify import is_shop
from shopipe.stream import Keys

from shopipe_worker.events import H_SHOP

if TYPE_CHECKING:
    from redis.asyncio import Redis

INDEX = "index/shops/"
COMPLIANCE = "compliance/"
# Longest hold of an archived segment's lock: one GET and one PUT of a segment.
LOCK_SECONDS = 30.0


def entry_key(shop: str, key: str) -> str:
    return f"{INDEX}{shop}/{key}"


async def note(store: Buffer, shops: set[str], key: str) -> None:
    """Enter ``key`` in the index of each of ``shops`` (before ``key`` is written). One empty
    PUT per shop, side by side (the store's pool bounds how many run at once)."""
    await asyncio.gather(*(store.put(entry_key(s, key), b"") for s in sorted(shops) if is_shop(s)))


def shop_of_record(record: segment.Record) -> str:
    for name, value in record.headers.items():
        if name.lower() == H_SHOP:
            return value.strip().lower()
    return ""


async def _cut(store: Buffer, r: Redis, keys: Keys, shop: str, key: str) -> None:
    """Remove ``shop``'s records from the archived segment ``key``. Under a Redis lock per
    segment: two redactions of shops sharing a segment would otherwise each write back the
    records the other had cut (S3 has no compare-and-swap to catch it)."""
    name = key[len(segment.PROCESSED) :]
    lock = r.lock(keys.archive_lock(name), timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
    try:
        async with lock:
            try:
                records = segment.decode(await store.get(key))
            except ObjectMissing:
                return
            kept = [rec for rec in records if shop_of_record(rec) != shop]
            if len(kept) == len(records):
                return
            if kept:
                await store.put_segment(key, segment.encode(kept))
            else:
                await store.delete(key)
    except LockError as e:
        raise TransientError("archived segment busy with another redaction; retry") from e


async def erase_shop(store: Buffer, r: Redis, keys: Keys, shop: str) -> int:
    """Erase every indexed object of ``shop`` and its compliance reports; how many objects
    were touched. Safe to run again."""
    touched = 0
    for obj in await store.list(f"{COMPLIANCE}{shop}/"):
        await store.delete(obj.key)
        touched += 1
    prefix = entry_key(shop, "")
    for entry in await store.list(prefix):
        target = entry.key[len(prefix) :]
        if target.startswith(segment.PROCESSED):
            name = target[len(segment.PROCESSED) :]
            if await store.exists(segment.incoming_key(name)) and not await store.exists(target):
                # Done but not yet moved by its finisher: erase once it has been.
                raise TransientError("a segment of the shop is being archived; retry")
            await _cut(store, r, keys, shop, target)
        elif target.startswith(segment.DEAD_LETTER):
            await store.delete(target)
        await store.delete(entry.key)
        touched += 1
    return touched


def blank(record: segment.Record) -> segment.Record:
    """``record`` without its body: what an archive keeps of a redacted shop's record."""
    return segment.Record(record.id, record.received_at, record.headers, b"")
