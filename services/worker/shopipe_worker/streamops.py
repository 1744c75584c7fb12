"""The consumer group commands the worker needs, each one small and typed.

Entry ids and fields come back as bytes (the clients do not decode); they are turned into str
here so the rest of the worker never sees the wire shape (RESP2 lists or RESP3 maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import exceptions as rex
from redis.asyncio import Redis


@dataclass
class Entry:
    """One announcement: the segment ``key`` and the delivery number ``attempt`` (1-based)."""

    id: str
    key: str
    attempt: int = 1  # handler attempts (a failure of Redis or the store counts none)
    retry_at: float = 0.0
    stalls: int = 0  # retries in a row for want of Redis or the store, for the backoff


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(raw_id: Any, fields: Any, attempt: int = 1) -> Entry | None:
    if raw_id is None or fields is None:
        return None  # deleted from the stream while pending
    decoded = {_s(k): _s(v) for k, v in dict(fields).items()}
    return Entry(_s(raw_id), decoded.get("key", ""), attempt)


def is_nogroup(e: Exception) -> bool:
    return isinstance(e, rex.ResponseError) and str(e).startswith("NOGROUP")


async def read(
    r: Redis, stream: str, group: str, me: str, count: int, block_ms: int
) -> list[Entry]:
    reply: Any = await r.xreadgroup(group, me, {stream: ">"}, count=count, block=block_ms)
    # RESP2 (what shopipe's clients speak): [[stream, [(id, fields), ...]]].
    pairs = list(reply.items()) if isinstance(reply, dict) else list(reply or [])
    out: list[Entry] = []
    for _stream, entries in pairs:
        for raw_id, fields in entries:
            entry = _entry(raw_id, fields)
            if entry is not None:
                out.append(entry)
    return out


async def claim(r: Redis, stream: str, group: str, me: str, ids: list[str]) -> list[Entry]:
    """Take ``ids`` for another delivery (the delivery count goes up); gone ones are left out."""
    if not ids:
        return []
    wanted: list[Any] = list(ids)
    reply: Any = await r.xclaim(stream, group, me, 0, wanted)
    return [e for raw_id, fields in reply if (e := _entry(raw_id, fields)) is not None]


# XCLAIM takes an entry whatever its owner, so a consumer back from a pause longer than the
# claim threshold would take back entries another consumer reclaimed and run them twice. No
# command refreshes only one's own entries: this script checks the owner (XPENDING) first.
_TOUCH_OWN = """
local mine = {}
for i = 4, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then
    if ARGV[3] == '' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    end
    mine[#mine + 1] = ARGV[i]
  end
end
return mine
"""


async def touch(
    r: Redis, stream: str, group: str, me: str, ids: list[str], idle_ms: int | None = None
) -> set[str]:
    """Reset (or set, with ``idle_ms``) the idle time of those of ``ids`` that ``me`` still
    holds, without counting a delivery; returns them.

    The heartbeat of work in hand; with a large ``idle_ms`` it releases work so another
    consumer reclaims it at once. Entries another consumer took over are left to it."""
    if not ids:
        return set()
    script = r.register_script(_TOUCH_OWN)
    args: list[Any] = [group, me, "" if idle_ms is None else str(idle_ms), *ids]
    reply: Any = await script(keys=[stream], args=args)
    return {_s(i) for i in reply or []}


async def autoclaim(
    r: Redis, stream: str, group: str, me: str, min_idle_ms: int, start: str, count: int
) -> tuple[str, list[Entry]]:
    """Entries idle past ``min_idle_ms`` (a crashed or stopped consumer's), with their
    delivery numbers; returns the cursor for the next call ("0-0" when the scan wrapped)."""
    reply = await r.xautoclaim(stream, group, me, min_idle_ms, start_id=start, count=count)
    cursor = _s(reply[0])
    entries = [e for raw_id, fields in reply[1] if (e := _entry(raw_id, fields)) is not None]
    if entries:
        counts = await deliveries(r, stream, group, [e.id for e in entries])
        for e in entries:
            e.attempt = counts.get(e.id, 1)
    return cursor, entries


async def deliveries(r: Redis, stream: str, group: str, ids: list[str]) -> dict[str, int]:
    """Delivery count of each pending id (XPENDING's extended form, one id at a time)."""
    async with r.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.xpending_range(stream, group, min=i, max=i, count=1)
        replies = await pipe.execute()
    out: dict[str, int] = {}
    for rows in replies:
        for row in rows:
            out[_s(row["message_id"])] = int(row["times_delivered"])
    return out


async def ack(r: Redis, stream: str, group: str, ids: list[str]) -> None:
    if ids:
        await r.xack(stream, group, *ids)


async def reap_consumers(r: Redis, stream: str, group: str, me: str, idle_ms: int) -> list[str]:
    """Remove consumers idle past ``idle_ms`` that hold nothing pending (DELCONSUMER would drop
    pending entries, so a consumer with any is kept until they are reclaimed)."""
    removed: list[str] = []
    for c in await r.xinfo_consumers(stream, group):
        name = _s(c["name"])
        if name != me and int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms:
            await r.xgroup_delconsumer(stream, group, name)
            removed.append(name)
    return removed


FENCE_TTL_MS = 600_000  # a worker gone for ten minutes leaves no key behind


async def durable(
    r: Redis,
    stream: str,
    group: str,
    me: str,
    ids: list[str],
    timeout_ms: int,
    *,
    fence: str,
    replicas: int = 1,
    local: bool = False,
) -> int:
    """Wait until every write made so far is safe elsewhere, before the segment's object goes:
    on ``replicas`` replicas (``WAIT n``), or with ``local`` on the master's own disk
    (``WAITAOF 1 0``, a lone master). Returns how many replicas (or local AOFs) acknowledged.

    WAIT counts this connection's own writes, and the replication stream is one ordered log: so
    one write here followed by WAIT covers the record transactions made on other connections too
    (the AOF is one ordered log as well). That write is the SET of ``fence``: the heartbeat of
    the entries beside it writes nothing when none of ``ids`` is pending on this master (taken
    over, or read on a master since demoted), and a WAIT after no write of this connection
    returns at once on Valkey and Redis 7.2+, covering nothing (test_worker_finish shows it)."""
    async with r.pipeline(transaction=False) as pipe:
        wanted: list[Any] = list(ids)
        pipe.xclaim(stream, group, me, 0, wanted, justid=True)
        pipe.set(fence, "1", px=FENCE_TTL_MS)
        if local:
            # Its reply is [local fsyncs, replica fsyncs].
            pipe.waitaof(1, 0, timeout_ms)
        else:
            pipe.wait(replicas, timeout_ms)
        replies = await pipe.execute()
    last = replies[-1]
    return int(last[0]) if local else int(last)
