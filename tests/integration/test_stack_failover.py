"""Drills on a private stack: the Sentinels really fail over, S3 really goes away and back."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel
from shopipe.address import Address
from shopipe.backlog import stream_backlog
from shopipe.buffer import Buffer
from shopipe.config import OperatorSettings, load_settings
from shopipe_devstack import Stack
from shopipe_devstack.redis import client
from shopipe_operator.backlog import BacklogProbe
from shopipe_operator.scaling import ScalePolicy, Scaler

from tests.chart_scripts_kit import until, written

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_killing_the_master_promotes_the_replica(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    info = stack.info
    old, *replicas = info.redis_nodes
    assert stack.current_master() == old

    assert stack.kill_redis(old, signal.SIGKILL) == old
    replica = stack.wait_failover(old, timeout=30)
    assert replica in replicas
    for s in info.sentinels:
        with client(s, None) as r:
            assert r.sentinel_get_master_addr_by_name(info.master_name) == replica

    # A Sentinel-aware client finds and writes to the new master.
    sentinel = Sentinel(list(info.sentinels), socket_timeout=1.0)
    key = f"test:{uuid.uuid4().hex}"
    try:
        writer = sentinel.master_for(info.master_name, password=info.redis_password)
        try:
            await writer.set(key, "after-failover")
            assert await writer.get(key) == b"after-failover"
        finally:
            await writer.aclose()
    finally:
        for conn in sentinel.sentinels:
            await conn.aclose()
    with client(replica, info.redis_password) as r:
        assert r.role()[0] == "master"
        assert r.get(key) == "after-failover"

    # The killed node comes back as a replica of the new master and catches up.
    stack.restart_redis(old)
    with client(old, info.redis_password) as r:
        deadline = time.monotonic() + 15
        while r.get(key) != "after-failover" and time.monotonic() < deadline:
            time.sleep(0.05)
        role = r.role()
        assert role[0] == "slave"
        assert (role[1], int(role[2])) == replica
        assert r.get(key) == "after-failover"


def _sentinel_failover(stack: Stack) -> Address:
    """SENTINEL FAILOVER (graceful, as for maintenance); returns the new master. Retried while
    the Sentinels still refuse it (a failover in progress, replicas not rediscovered yet)."""
    old = stack.current_master()
    deadline = time.monotonic() + 60
    while True:
        try:
            with client(stack.info.sentinels[0], None) as s:
                s.sentinel_failover(stack.info.master_name)
            break
        except redis.ResponseError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"SENTINEL FAILOVER kept failing: {e}") from e
            time.sleep(0.2)
    return stack.wait_failover(old, timeout=60)


def _traffic(stack: Stack, stream: str, group: str, n: int) -> None:
    """Announce ``n`` segments and process them all, as receivers and workers do; trimmed to a
    small MAXLEN as the receivers' approximate cap does at scale."""
    with client(stack.current_master(), stack.info.redis_password) as r:
        # A master just promoted refuses writes (NOREPLICAS, min-replicas-to-write) until a
        # replica has linked to it: wait for that, bounded, as every shopipe client retries.
        until(lambda: written(r, f"{stream}:writable", "1"), "the master never took writes", 30)
        for i in range(n):
            r.xadd(
                stream, {"key": f"incoming/{i:013d}-x.seg", "n": "1"}, maxlen=50, approximate=False
            )
            got: Any = r.xreadgroup(group, "worker-a", {stream: ">"}, count=1)
            for _name, entries in got:
                r.xack(stream, group, *[eid for eid, _ in entries])


@pytest.mark.asyncio
async def test_backlog_is_zero_after_two_failovers_and_the_operator_keeps_its_workers(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    env = stack.info.service_env()
    s = load_settings(OperatorSettings, {**env, "SHOPIPE_MIN_WORKERS": "1"})
    with client(stack.current_master(), stack.info.redis_password) as r:
        r.xgroup_create(s.stream, s.consumer_group, id="0", mkstream=True)
    _traffic(stack, s.stream, s.consumer_group, 300)
    first = _sentinel_failover(stack)
    _traffic(stack, s.stream, s.consumer_group, 300)
    second = _sentinel_failover(stack)
    assert second != first

    store = Buffer(s, concurrency=2)
    master = redis.asyncio.Redis(host=second[0], port=second[1], password=stack.info.redis_password)
    try:
        probe = BacklogProbe(s.stream, s.consumer_group, store, 0.0, cap=1000)
        got = await probe.measure(master)
        sb = await stream_backlog(master, s.stream, s.consumer_group)
        # Nothing undelivered, nothing pending, nothing in incoming/: whatever Redis's own
        # lag counter says now (reported: sb.reported_lag), the backlog is 0...
        assert (got.lag, got.pending, got.incoming, got.total) == (0, 0, 0, 0), sb
        # ...and the scaler keeps the one worker it has.
        d = Scaler(ScalePolicy.from_settings(s)).decide(got.total, 1, now=0.0)
        assert not d.changes
        assert d.desired == 1
    finally:
        await master.aclose()
        store.close()
