"""The partition drills (issue 16): the pipeline's processes on separate network hosts, real
network faults between them under load, and the checker's figures after each (see
docs/reliability.md for the fault model and the measured table).

Hosts: redis-0 (master at start), redis-1 and redis-2 (replicas), sentinel-0..2, s3, receiver-0/1,
worker-0/1, operator, load (the load generator and checker: Shopify).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from shopipe.address import fmt

from tests.drills.hosts import MAX_LAG_SECONDS, table_spawns
from tests.drills.scenario import Drill

pytestmark = pytest.mark.drill

SENTINELS = ["sentinel-0", "sentinel-1", "sentinel-2"]
MINORITY = ["redis-0", "receiver-0", "worker-0"]
MAJORITY = ["redis-1", "redis-2", *SENTINELS, "receiver-1", "worker-1", "operator"]
REDIS_SIDE = ["redis-0", "redis-1", "redis-2", *SENTINELS]
RECEIVER_DEADLINE = 5.0  # Shopify gives up after 5 s: an answer must come before


def assert_exact(figs, restarts_allowed: tuple[str, ...] = ()) -> None:
    """What every drill promises: nothing acknowledged lost, no ctx.tx effect twice, and the
    operator restarted nobody outside ``restarts_allowed``."""
    assert figs.lost == 0, figs.line()
    assert figs.doubled == 0, figs.line()
    assert {r["pod"] for r in figs.restarts} <= set(restarts_allowed), figs.line()


@pytest.mark.asyncio
async def test_master_cut_off_with_a_receiver_and_a_worker_minority_side(drill: Drill):
    """Drill 1: redis-0 (master), receiver-0 and worker-0 cut off from the rest; S3 and
    Shopify still reach both sides."""
    s = drill.stack
    old = s.info.redis_nodes[0]
    await drill.warm()
    drill.fault(lambda f: f.cut(MINORITY, MAJORITY))
    await drill.until("the Sentinels elect a replica", lambda: bool(s.elected_other_than(old)), 30)
    new = s.current_master()
    await drill.until("the isolated master refuses writes", lambda: drill.refuses_writes(old), 30)
    refused_after = time.monotonic() - drill.fault_at
    await drill.hold(2)
    drill.heal()
    rejoin = await drill.until(
        "the old master rejoins as a replica", lambda: drill.role(old) == "slave", 30
    )
    moved = await drill.until_pods_on(new)
    await drill.settle()
    figs = await drill.finish(
        writes_refused_after=f"{refused_after:.1f}s",
        rejoined=f"{rejoin:.1f}s",
        pods_moved=f"{moved:.1f}s",
    )
    assert refused_after <= MAX_LAG_SECONDS + 5, "the old master took writes past the lag"
    assert_exact(figs, restarts_allowed=("receiver-0", "worker-0"))
    for r in figs.restarts:
        assert r["reason"] in ("status_names_old_master", "connection_on_old_master")


@pytest.mark.asyncio
async def test_sentinels_cut_off_from_the_master_clients_move_after_the_heal(drill: Drill):
    """Drill 2: only the Sentinels lose the master; clients still reach it. The failover
    happens; after the heal the old master is demoted and its clients (READONLY) move."""
    s = drill.stack
    old = s.info.redis_nodes[0]
    await drill.warm()
    drill.fault(lambda f: f.cut(SENTINELS, ["redis-0"]))
    await drill.until("the Sentinels elect a replica", lambda: bool(s.elected_other_than(old)), 30)
    new = s.current_master()
    await drill.hold(3)
    drill.heal()
    await drill.until("the old master is demoted", lambda: drill.role(old) == "slave", 30)
    moved = await drill.until_pods_on(new)
    await drill.settle()
    figs = await drill.finish(pods_moved=f"{moved:.1f}s")
    assert_exact(figs, restarts_allowed=tuple(s.pipeline))


@pytest.mark.asyncio
async def test_worker_cut_off_from_redis_mid_batch_longer_than_the_claim_time(drill: Drill):
    """Drill 3: worker-0 loses Redis (and the Sentinels) while holding entries, for longer
    than the claim idle time: worker-1 claims them; worker-0's late finish changes nothing."""
    drill.load.body_extra = {"sleep": 0.05}  # handlers slower than ingest: entries held
    await drill.warm()
    await drill.until("worker-0 holding entries", lambda: drill.pending_of("worker-0") > 0, 30)
    drill.fault(lambda f: f.cut(["worker-0"], REDIS_SIDE))
    await drill.until("worker-1 claims them", lambda: drill.pending_of("worker-0") == 0, 30)
    await drill.hold(2)
    drill.heal()
    await drill.settle()
    figs = await drill.finish()
    assert_exact(figs)
    assert figs.statuses.keys() == {200}, "a worker's fault never reaches Shopify"


@pytest.mark.asyncio
async def test_receiver_cut_off_from_s3_answers_503_in_time(drill: Drill):
    """Drill 4: receiver-0 loses S3 silently (DROP): each of its requests is answered 503
    before Shopify's 5 s, none hangs; receiver-1 keeps answering 200."""
    await drill.warm()
    drill.fault(lambda f: f.cut(["receiver-0"], ["s3"]))
    await drill.hold(12)
    drill.heal()
    await drill.settle()
    figs = await drill.finish()
    t0, t1 = drill.fault_at, drill.healed_at
    # Every request the cut receiver held while S3 was away: in flight at the cut or sent
    # after it, and due (Shopify's 5 s) before the heal.
    held = [
        a for a in drill.load.attempts
        if a.side == "receiver-0" and a.sent_at < t1 - RECEIVER_DEADLINE
        and (a.status == 0 or a.answered_at > t0)
    ]  # fmt: skip
    after = {a.status for a in held if a.sent_at >= t0}
    hung = [a for a in held if a.status == 0 or a.answered_at - a.sent_at >= RECEIVER_DEADLINE]
    drill.report(f"  cut side: {len(held)} requests, statuses {sorted(after)}, {len(hung)} hung")
    assert after == {503}, f"the cut receiver answered {after}, not only 503"
    assert not hung, f"{len(hung)} requests hung to Shopify's timeout: {figs.line()}"
    assert figs.unavailable["receiver-1"] < RECEIVER_DEADLINE
    assert_exact(figs)


@pytest.mark.asyncio
async def test_one_sentinel_cut_off_no_failover_no_restart(drill: Drill):
    """Drill 5."""
    old = drill.stack.current_master()
    await drill.warm()
    drill.fault(lambda f: f.isolate(["sentinel-2"]))
    await drill.hold(8)  # eight times down-after-milliseconds
    during = drill.stack.current_master()  # the two others still agree
    drill.heal()
    await drill.settle()
    figs = await drill.finish()
    assert during == old
    assert drill.stack.current_master() == old, "a single cut Sentinel caused a failover"
    assert_exact(figs)
    assert figs.statuses.keys() == {200}, "one Sentinel away, every webhook still gets a 200"


FLAP_SECONDS = 30.0
FLAP_DOWN, FLAP_UP = 3.0, 3.0


@pytest.mark.asyncio
async def test_master_link_flaps(drill: Drill):
    """Drill 6: the master host's link goes down and up every few seconds."""
    s = drill.stack
    await drill.warm()
    drill.fault_at = time.monotonic()
    flaps = 0
    while time.monotonic() - drill.fault_at < FLAP_SECONDS:
        await asyncio.to_thread(drill.faults.link, "redis-0", False)
        await drill.hold(FLAP_DOWN)
        await asyncio.to_thread(drill.faults.link, "redis-0", True)
        await drill.hold(FLAP_UP)
        flaps += 1
    drill.heal()
    await drill.until("the Sentinels agree on a master", lambda: s.current_master() is not None, 30)
    master = s.current_master()
    others = [a for a in s.info.redis_nodes if a != master]
    await drill.until(
        "the other nodes replicate", lambda: all(drill.role(a) == "slave" for a in others), 30
    )
    moved = await drill.until_pods_on(master)
    await drill.settle()
    figs = await drill.finish(flaps=flaps, master_after=fmt(master), pods_moved=f"{moved:.1f}s")
    assert_exact(figs, restarts_allowed=tuple(s.pipeline))


@pytest.mark.asyncio
async def test_workers_cut_off_from_s3_for_60_s(drill: Drill):
    """Drill 7: no worker reaches S3 for 60 s: nothing is dead-lettered for it, and every
    webhook is processed after the heal."""
    await drill.warm()
    drill.fault(lambda f: f.cut(["worker-0", "worker-1"], ["s3"]))
    await drill.hold(60)
    drill.heal()
    await drill.settle()
    figs = await drill.finish(wait=90)
    assert figs.dead_lettered == 0, figs.line()
    assert figs.statuses.keys() == {200}, "the receivers never needed the workers"
    assert_exact(figs)


@pytest.mark.asyncio
async def test_two_consecutive_failovers_old_master_restarted_between(drill: Drill):
    """Drill 8: the master is cut off (failover 1), healed and restarted; then the new master
    is cut off (failover 2, to the first node or the third: three Redis nodes, as the chart)."""
    s = drill.stack
    first = s.info.redis_nodes[0]

    await drill.warm()
    drill.fault(lambda f: f.isolate(["redis-0"]))
    await drill.until("failover 1", lambda: bool(s.elected_other_than(first)), 30)
    second = s.current_master()
    drill.heal()
    await asyncio.to_thread(s.kill_redis, first)
    await asyncio.to_thread(s.restart_redis, first)
    await drill.until("the restarted node replicates", lambda: drill.role(first) == "slave", 30)
    # Sentinel fails the same master name over again only after 2 x failover-timeout.
    await drill.until("a synced replica", lambda: drill.replica_synced(first), 30)
    await drill.hold(2 * s.failover_timeout_ms / 1000)
    drill.fault(lambda f: f.isolate([s.redis_host(second)]))
    await drill.until("failover 2", lambda: bool(s.elected_other_than(second)), 60)
    third = s.current_master()
    drill.heal()
    moved = await drill.until_pods_on(third)
    await drill.settle()
    figs = await drill.finish(
        redis0_starts=table_spawns(s.table, "redis-0"), pods_moved=f"{moved:.1f}s"
    )
    assert_exact(figs, restarts_allowed=tuple(s.pipeline))
