"""The Redis stream that announces segments, and the names of every Redis key shopipe writes."""

from __future__ import annotations

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline


def as_str(value: object) -> str:
    """A Redis reply value as text: clients made with or without ``decode_responses`` give
    bytes or str (and a stream id, a name or a field may come either way)."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def announce(r: Redis, stream: str, key: str, n: int, maxlen: int) -> str:
    """XADD one segment. Approximate trimming: what it drops, the sweeper finds in the bucket."""
    return as_str(await r.xadd(stream, {"key": key, "n": str(n)}, maxlen=maxlen, approximate=True))


def announce_in(pipe: Pipeline, stream: str, keys: list[str], n: int, maxlen: int) -> None:
    """Queue one XADD per segment on ``pipe`` (the sweeper sends a page of them in one round
    trip), with the fields ``announce`` writes."""
    for key in keys:
        pipe.xadd(stream, {"key": key, "n": str(n)}, maxlen=maxlen, approximate=True)


async def ensure_group(r: Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) unless it exists; safe to call any time."""
    try:
        await r.xgroup_create(stream, group, id="0", mkstream=True)
    except rex.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


class Keys:
    """Every Redis key shopipe writes, in one place (docs/architecture.md lists them)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def done_webhook(self, shop: str, topic: str, webhook_id: str) -> str:
        # Headers are unsigned: with shop and topic in the key, a body replayed under another
        # topic or shop with the same webhook id cannot make the genuine delivery a duplicate.
        return f"{self.prefix}:done:wh:{shop}:{topic}:{webhook_id}"

    def forward_waiting(self) -> str:
        """Sorted set: segments with records waiting on a forward destination (throttled or its
        circuit open), scored by when that news gets stale (epoch ms). Written by the worker's
        forward handler, read by the operator: more workers cannot speed them up."""
        return f"{self.prefix}:fwd:waiting"

    def forward_bound(self) -> str:
        """String with a TTL: the whole backlog waits on forward destinations at their limits
        (every route saturated, every handler's topics forwarded too). Written by the workers
        (``shopipe_worker/forward/saturation.py``), read by the operator: it leaves the unread
        lag out of the backlog it scales on."""
        return f"{self.prefix}:fwd:bound"

    def done_event(self, shop: str, topic: str, event_id: str) -> str:
        return f"{self.prefix}:done:ev:{shop}:{topic}:{event_id}"

    def dead(self, record_id: str) -> str:
        return f"{self.prefix}:dead:{record_id}"

    def fence(self, consumer: str) -> str:
        """Written by ``consumer`` before each WAIT: WAIT covers only its own connection's
        writes, and a write that changes nothing (an XCLAIM of ids no longer pending) is none."""
        return f"{self.prefix}:fence:{consumer}"

    def sweeper_lock(self) -> str:
        return f"{self.prefix}:sweeper:lock"

    def sweeper_cursor(self) -> str:
        return f"{self.prefix}:sweeper:cursor"

    def state(self, shop: str, kind: str, resource_id: str) -> str:
        return f"{self.prefix}:state:{shop}:{kind}:{resource_id}"

    def shop(self, shop: str) -> str:
        return f"{self.prefix}:shop:{shop}"

    def archive_lock(self, name: str) -> str:
        """Held while a redaction rewrites the archived segment ``name``."""
        return f"{self.prefix}:lock:archive:{name}"

    def redacted(self, shop: str) -> str:
        """The shop's redaction tombstone: the version (microseconds) its data was erased at."""
        return f"{self.prefix}:redacted:{shop}"
