"""The operator's probes against the shared real stack: master watch, CLIENT LIST, stream backlog.

Nothing here breaks the stack: streams get unique names, connections are closed at the end.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from shopipe.address import fmt
from shopipe.backlog import stream_backlog
from shopipe.config import OperatorSettings, load_settings
from shopipe.sentinel import RedisTarget
from shopipe_devstack import Stack
from shopipe_operator.master import MasterWatch
from shopipe_operator.stale import probe_pods

pytestmark = pytest.mark.integration


def target(stack: Stack) -> RedisTarget:
    return RedisTarget.from_settings(load_settings(OperatorSettings, stack.info.service_env()))


@pytest.mark.asyncio
async def test_watch_names_the_majority_master_and_the_replica_as_suspect(stack: Stack) -> None:
    watch = MasterWatch(target(stack))
    view = await watch.poll()
    master = stack.current_master()
    assert view.address == master
    assert set(view.answers.values()) == {fmt(master)}
    replicas = [a for a in stack.info.redis_nodes if a != master]
    assert sorted(await watch.suspects()) == sorted(replicas)
    assert watch.failovers == 0


@pytest.mark.asyncio
async def test_named_connection_on_a_non_master_marks_its_pod(stack: Stack) -> None:
    master = stack.current_master()
    replica = next(a for a in stack.info.redis_nodes if a != master)
    pod = f"ghost-{uuid.uuid4().hex[:8]}"
    password = stack.info.redis_password
    with redis.Redis(
        host=replica[0], port=replica[1], password=password, client_name=f"shopipe:worker:{pod}"
    ) as stray:
        stray.ping()  # the connection exists (and is named) from here on
        seen = await probe_pods([(pod, None), ("other", None)], [replica], password, 1.0)
    assert seen[0].name == pod
    assert seen[0].connected_to == (fmt(replica),)
    assert seen[0].off_master(fmt(master)) == "connection_on_old_master"
    assert seen[1].off_master(fmt(master)) is None  # silent and unconnected: not stale


@pytest.mark.asyncio
async def test_stream_backlog_counts_lag_and_pending_and_missing_is_zero(stack: Stack) -> None:
    master = stack.current_master()
    stream = f"test:{uuid.uuid4().hex}"
    r: Any = redis.asyncio.Redis(host=master[0], port=master[1], password=stack.info.redis_password)

    async def lag_pending(cap: int = 1000) -> tuple[int, int]:
        sb = await stream_backlog(r, stream, "g", cap)
        return sb.lag, sb.pending

    try:
        assert await lag_pending() == (0, 0)  # no stream
        ids = [await r.xadd(stream, {"key": f"k{i}", "n": "1"}) for i in range(5)]
        assert await lag_pending() == (5, 0)  # no group yet: it will start at 0
        await r.xgroup_create(stream, "g", id="0")
        await r.xreadgroup("g", "c1", {stream: ">"}, count=2)
        assert await lag_pending() == (3, 2)
        # A deleted undelivered entry makes Redis's own lag unknown: it is counted instead.
        await r.xdel(stream, ids[3])
        assert await lag_pending() == (2, 2)
        assert await lag_pending(1) == (1, 2)  # bounded count
    finally:
        await r.delete(stream)
        await r.aclose()


@pytest.mark.asyncio
async def test_a_lag_counter_that_lies_is_not_believed(stack: Stack) -> None:
    """The group's entries-read set behind its last-delivered-id, as two failovers left it
    (lag ~946 with nothing to deliver): the backlog counts what is really undelivered."""
    master = stack.current_master()
    stream = f"test:{uuid.uuid4().hex}"
    r: Any = redis.asyncio.Redis(host=master[0], port=master[1], password=stack.info.redis_password)
    try:
        for i in range(50):
            await r.xadd(stream, {"key": f"k{i}", "n": "1"})
        await r.xgroup_create(stream, "g", id="$", entries_read=4)
        sb = await stream_backlog(r, stream, "g", 1000)
        assert sb.reported_lag == 46  # what Redis says...
        assert (sb.lag, sb.pending) == (0, 0)  # ...and what is true
    finally:
        await r.delete(stream)
        await r.aclose()
