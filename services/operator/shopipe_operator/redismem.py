"""Redis memory as the master reports it (INFO memory), exported each reconcile.

Redis runs with ``maxmemory`` and ``noeviction`` (charts/shopipe/files/redis.conf): at the
limit it refuses writes and processing stops, so ShopipeRedisMemoryHigh alerts at 80 % of it.
The master is read because it takes the writes; its replicas hold the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shopipe_operator.metrics import REDIS_FRAGMENTATION, REDIS_MAXMEMORY, REDIS_USED


@dataclass(frozen=True)
class Memory:
    used: int
    maxmemory: int
    fragmentation: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "used_bytes": self.used,
            "maxmemory_bytes": self.maxmemory,
            "fragmentation_ratio": self.fragmentation,
        }


async def read(r: Redis) -> Memory:
    info: dict[str, Any] = await r.info("memory")
    return Memory(
        used=int(info["used_memory"]),
        maxmemory=int(info.get("maxmemory", 0)),
        fragmentation=float(info.get("mem_fragmentation_ratio", 0.0)),
    )


def publish(m: Memory) -> None:
    REDIS_USED.set(m.used)
    REDIS_MAXMEMORY.set(m.maxmemory)
    REDIS_FRAGMENTATION.set(m.fragmentation)
