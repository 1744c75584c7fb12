"""Drills on a private stack: the Sentinels really fail over, S3 really goes away and back."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable

import pytest
from redis.asyncio.sentinel import Sentinel
from shopipe.devstack import Stack
from shopipe.devstack.redis import client

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
            got = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", info.master_name)
        assert (got[0], int(got[1])) == replica

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
        assert r.execute_command("ROLE")[0] == "master"
        assert r.get(key) == "after-failover"

    # The killed node comes back as a replica of the new master and catches up.
    stack.restart_redis(old)
    with client(old, info.redis_password) as r:
        deadline = time.monotonic() + 15
        while r.get(key) != "after-failover" and time.monotonic() < deadline:
            time.sleep(0.05)
        role = r.execute_command("ROLE")
        assert role[0] == "slave"
        assert (role[1], int(role[2])) == replica
        assert r.get(key) == "after-failover"
