"""A demoted master's answers, from a real replica: classified by exception class as "the master
moved" (redis-py strips the code from the message), and never counted as a handler attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis import exceptions as rex
from redis.asyncio import Redis
from shopipe import segment
from shopipe.errors import RedisUnavailable
from shopipe.sentinel import MasterClient, RedisTarget, client, master_lost
from shopipe_devstack import Stack

from tests.worker_kit import Kit, headers, kit, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest


def replica_of(stack: Stack) -> tuple[str, int]:
    return next(a for a in stack.info.redis_nodes if a != stack.current_master())


async def raised(r: Redis, fn: Callable[[Redis], Any]) -> BaseException:
    try:
        await fn(r)
    except Exception as e:
        return e
    raise AssertionError("no error")


async def multi_set(r: Redis) -> Any:
    async with r.pipeline(transaction=True) as pipe:
        pipe.set("shopipe-test:demoted", "1")
        pipe.incr("shopipe-test:demoted-n")
        return await pipe.execute()


async def piped_set(r: Redis) -> Any:
    async with r.pipeline(transaction=False) as pipe:
        pipe.set("shopipe-test:demoted", "1")
        return await pipe.execute()


@pytest.mark.asyncio
async def test_a_replica_refusing_writes_means_the_master_moved(stack: Stack) -> None:
    r = client(replica_of(stack), stack.info.redis_password, 2.0)
    try:
        plain = await raised(r, lambda r: r.set("shopipe-test:demoted", "1"))
        in_multi = await raised(r, multi_set)
        in_pipeline = await raised(r, piped_set)
    finally:
        await r.aclose()
    assert isinstance(plain, rex.ReadOnlyError)
    assert not str(plain).startswith("READONLY")  # why a message test never matched
    # The transaction ends in EXECABORT; redis-py raises the queued command's READONLY from it.
    assert isinstance(in_multi, rex.ReadOnlyError)
    assert isinstance(in_multi.__cause__, rex.ExecAbortError)
    for e in (plain, in_multi, in_pipeline):
        assert master_lost(e), repr(e)


@pytest.mark.asyncio
async def test_noreplicas_is_the_master_moved_a_wrong_type_is_not(stack: Stack) -> None:
    master = stack.current_master()
    r = client(master, stack.info.redis_password, 2.0)
    try:
        await r.delete("shopipe-test:list")
        await r.rpush("shopipe-test:list", "x")
        wrong = await raised(r, lambda r: r.incr("shopipe-test:list"))
        # More replicas wanted than exist: the master refuses writes with NOREPLICAS.
        # The shared stack's own value goes back after (other tests check the policy).
        was = str((await r.config_get("min-replicas-to-write"))["min-replicas-to-write"])
        await r.config_set("min-replicas-to-write", 5)
        try:
            noreplicas = await raised(r, lambda r: r.set("shopipe-test:noreplicas", "1"))
            in_multi = await raised(r, multi_set)
        finally:
            await r.config_set("min-replicas-to-write", was)
    finally:
        await r.aclose()
    assert not master_lost(wrong)
    assert type(noreplicas) is rex.ResponseError
    assert str(noreplicas).startswith("NOREPLICAS")
    assert master_lost(noreplicas)
    assert master_lost(in_multi), repr(in_multi)


@pytest.mark.asyncio
async def test_master_client_retries_a_demoted_master_then_says_unavailable(stack: Stack) -> None:
    """Pinned to a replica (a master that stays demoted): the write is retried, the master
    resolved again each time, and the caller finally gets RedisUnavailable, not the reply."""
    target = RedisTarget(
        sentinels=(),
        master_name=stack.info.master_name,
        password=stack.info.redis_password,
        sentinel_password=None,
        fixed=replica_of(stack),
        timeout=0.5,
    )
    mc = MasterClient(target, service="test", pod="demoted")
    try:
        with pytest.raises(RedisUnavailable) as got:
            await mc.call(lambda r: r.set("shopipe-test:demoted", "1"), deadline=1.0)
        assert isinstance(got.value.__cause__, rex.ReadOnlyError)
        assert mc.epoch > 1  # it reconnected rather than give up at once
    finally:
        await mc.close()


@pytest.mark.asyncio
async def test_a_demoted_master_counts_no_handler_attempt(stack: Stack, kit: Kit) -> None:
    """Records processed through a demoted master (here: a replica) with one attempt allowed:
    they are never dead-lettered, their delivery count stays 1, and once the master is back
    they are applied once."""
    # Claim threshold far above the test's length: with the kit's 1 s, a loaded machine (CI
    # runs four test processes on two cores) could let the entry in flight grow idle and the
    # consumer's own XAUTOCLAIM take it, counting a delivery that is no handler attempt either.
    settings = kit.with_settings(
        SHOPIPE_POD_NAME="w1", SHOPIPE_MAX_ATTEMPTS="1", SHOPIPE_CLAIM_IDLE_SECONDS="60"
    )
    demoted = MasterClient(
        RedisTarget(
            sentinels=(),
            master_name=stack.info.master_name,
            password=stack.info.redis_password,
            sentinel_password=None,
            fixed=replica_of(stack),
            timeout=0.2,
        ),
        service="test",
        pod="demoted",
    )
    consumer = kit.consumer(settings=settings)
    real = consumer.processor.master
    consumer.processor.master = demoted  # its writes reach a server that refuses them
    ids = ["m-1", "m-2"]
    key = await kit.produce([(headers("test/ping", i), b"{}") for i in ids])
    task = asyncio.create_task(consumer.run())
    try:

        async def stalled() -> bool:
            return any(e.stalls >= 1 for e in consumer.waiting.values())

        await wait_for(stalled, 30, "a retry for want of a master")
        r = await kit.master.get()
        rows = await r.xpending_range(settings.stream, settings.consumer_group, "-", "+", 10)
        assert [int(row["times_delivered"]) for row in rows] == [1]
        assert await kit.store.list(segment.DEAD_LETTER) == []
        consumer.processor.master = real  # the master is back

        async def applied() -> bool:
            return await kit.counts() == dict.fromkeys(ids, 1)

        await wait_for(applied, 30, "records applied once")
        await wait_for(lambda: _gone(kit, key), 30, "segment removed")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await demoted.close()
    assert await kit.store.list(segment.DEAD_LETTER) == []


async def _gone(kit: Kit, key: str) -> bool:
    return not await kit.store.exists(key)
