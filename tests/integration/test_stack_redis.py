"""The stack's Redis is real and production-shaped: Sentinel discovery, replication, passwords."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel
from shopipe_devstack import Stack
from shopipe_devstack.redis import client

pytestmark = pytest.mark.integration


async def _close(sentinel: Sentinel) -> None:
    for s in sentinel.sentinels:
        await s.aclose()


@pytest.mark.asyncio
async def test_write_via_sentinel_master_is_read_back_from_the_replica(stack: Stack) -> None:
    info = stack.info
    sentinel = Sentinel(list(info.sentinels), socket_timeout=1.0)
    try:
        master = sentinel.master_for(info.master_name, password=info.redis_password)
        key, value = f"test:{uuid.uuid4().hex}", uuid.uuid4().hex
        try:
            await master.set(key, value)
        finally:
            await master.aclose()
        replicas = await sentinel.discover_slaves(info.master_name)
    finally:
        await _close(sentinel)
    assert sorted(replicas) == sorted(info.redis_nodes[1:])
    host, port = info.redis_nodes[1]
    replica = AsyncRedis(
        host=host, port=port, password=info.redis_password,
        decode_responses=True, socket_timeout=1.0,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        got = await replica.get(key)
        while got != value and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            got = await replica.get(key)
        assert got == value
        assert (await replica.role())[0] == "slave"
    finally:
        await replica.aclose()


def test_redis_is_configured_as_in_production(stack: Stack) -> None:
    info = stack.info
    assert len(info.redis_nodes) == 3  # a master and two replicas, as the chart runs
    for node in info.redis_nodes:
        with client(node, info.redis_password) as r:
            # The chart's policy (charts/shopipe/files/redis.conf), as the server applied it.
            assert r.config_get("appendonly") == {"appendonly": "yes"}
            assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert r.config_get("save") == {"save": ""}
            assert r.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
            assert r.config_get("min-replicas-max-lag") == {"min-replicas-max-lag": "10"}
            assert r.config_get("maxmemory") == {"maxmemory": str(768 * 1024 * 1024)}
            assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            assert r.config_get("bind")["bind"] == info.bind
    with client(info.sentinels[0], None) as s:
        fields = s.sentinel_master(info.master_name)
    assert fields["quorum"] == 2
    assert fields["down-after-milliseconds"] == info.sentinel_down_after_ms
    assert fields["failover-timeout"] == info.failover_timeout_ms
    assert fields["parallel-syncs"] == 1
    assert stack.current_master() == info.redis_nodes[0]


@pytest.mark.parametrize("node", [0, 1])
@pytest.mark.parametrize("password", ["wrong-password", None])
def test_wrong_redis_password_is_refused(stack: Stack, node: int, password: str | None) -> None:
    with (
        client(stack.info.redis_nodes[node], password) as r,
        pytest.raises(redis.AuthenticationError),
    ):
        r.set("test:intruder", "x")


def test_secrets_are_kept_private(stack: Stack) -> None:
    info = stack.info
    for name in ("redis_password", "s3_secret_key", "shopify_secret"):
        path = info.secrets_dir / name
        assert path.stat().st_mode & 0o777 == 0o600
    assert info.secrets_dir.stat().st_mode & 0o777 == 0o700
    for conf in (info.state_dir / "redis").glob("*/redis.conf"):
        assert conf.stat().st_mode & 0o777 == 0o600
    shown = repr(info) + (info.state_dir / "stack.json").read_text()
    assert info.redis_password not in shown
    assert info.s3_secret_key not in shown
    assert info.shopify_secret not in shown
