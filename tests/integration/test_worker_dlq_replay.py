"""`shopipe dlq replay` never applies a record twice: cut off at any step and run again, or
replaying a record whose Shopify retry already succeeded (issue 14 §3). On the shared stack;
the cut is made by running only the first steps of ``dlq.Replay`` (its seam), as a pod
evicted or a connection dropped mid-replay would leave it."""

from __future__ import annotations

import json

import pytest
from shopipe_worker import dlq

from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]  # the fixture, imported for pytest


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def no_webhook_id(topic: str) -> dict[str, str]:
    h = headers(topic, "")
    del h["X-Shopify-Webhook-Id"]
    return h


async def dead_lettered(kit: Kit) -> list[dlq.DeadLetter]:
    """Two records that always fail, one without a webhook id, dead-lettered for real."""
    kit.env["SHOPIPE_MAX_ATTEMPTS"] = "2"
    async with kit.running():
        await kit.produce(
            [
                (headers("test/ping", "bad"), body(fail="always")),
                (no_webhook_id("test/ping"), body(fail="always")),
            ]
        )
        await wait_for(lambda: settled(kit), what="records dead-lettered")
    dead = await dlq.list_dead(kit.store)
    assert len(dead) == 2
    r = await kit.master.get()
    await r.set(kit.fixed_key, "1")  # the cause is fixed: handlers succeed from now on
    return dead


async def cut_off(replay: dlq.Replay, items: list[dlq.DeadLetter], step: str) -> None:
    """Run the replay's steps up to ``step`` and stop there."""
    batch = await replay.check(items)
    await replay.clear(batch)
    if step == "cleared":
        return
    key = await replay.write(batch)
    assert key is not None
    if step == "written":
        return  # never announced: the sweeper finds it after its grace period
    await replay.announce(key, len(batch.todo))
    if step == "announced":
        return  # before the dead-letter DELETE
    await replay.delete(items[0])  # "deleting": cut off between two DELETEs


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("step", "worker_between"),
    [
        ("cleared", False),
        ("written", False),
        ("written", True),
        ("announced", False),
        ("announced", True),
        ("deleting", True),
    ],
)
async def test_an_interrupted_replay_run_again_applies_once(
    kit: Kit, step: str, worker_between: bool
) -> None:
    dead = await dead_lettered(kit)
    orphan = next(d.record_id for d in dead if not d.doc.headers.get("x-shopify-webhook-id"))
    await cut_off(dlq.Replay(kit.settings, kit.master, kit.store), dead, step)
    if worker_between:  # the first copy takes effect before the operator runs it again
        async with kit.running(sweep=True):
            await wait_for(lambda: settled(kit), timeout=30, what="first copy processed")
        assert await kit.counts() == {"bad": 1, f"record:{orphan}": 1}

    # The operator runs the replay again (with worker_between=False: before any worker
    # processed the first copy, so two copies of each record are processed).
    again = await dlq.replay(kit.settings, kit.master, kit.store, await dlq.list_dead(kit.store))
    assert again.forced == []
    async with kit.running(sweep=True):
        await wait_for(lambda: settled(kit), timeout=30, what="replayed copies processed")
    # Every copy is processed; the done-markers let one of them take effect.
    assert await kit.counts() == {"bad": 1, f"record:{orphan}": 1}
    assert await dlq.list_dead(kit.store) == []

    # The dead letters written back (a stale copy): a replay reports them done, skips them.
    for d in dead:
        await kit.store.put_json(d.key, d.doc.to_json())
    third = await dlq.replay(kit.settings, kit.master, kit.store, await dlq.list_dead(kit.store))
    assert sorted(third.already_done) == sorted(d.record_id for d in dead)
    assert third.replayed == []
    assert third.segments == []
    assert await dlq.list_dead(kit.store) == []
    assert await kit.counts() == {"bad": 1, f"record:{orphan}": 1}


@pytest.mark.asyncio
async def test_a_record_whose_shopify_retry_succeeded_is_not_replayed(kit: Kit) -> None:
    dead = await dead_lettered(kit)
    bad = next(d for d in dead if d.doc.headers.get("x-shopify-webhook-id") == "bad")
    async with kit.running():
        await kit.produce([(headers("test/ping", "bad"), body())])  # Shopify's retry
        await wait_for(lambda: settled(kit), what="the retry processed")
    assert await kit.counts() == {"bad": 1}

    report = await dlq.replay(kit.settings, kit.master, kit.store, [bad])
    assert report.already_done == [bad.record_id]
    assert report.replayed == []
    assert report.segments == []
    assert bad.record_id not in [d.record_id for d in await dlq.list_dead(kit.store)]
    async with kit.running(sweep=True):
        await wait_for(lambda: settled(kit), what="nothing left to process")
    assert await kit.counts() == {"bad": 1}

    # Deliberately forced, it runs again, and says so.
    await kit.store.put_json(bad.key, bad.doc.to_json())
    forced = await dlq.replay(kit.settings, kit.master, kit.store, [bad], force=True)
    assert forced.forced == [bad.record_id]
    assert len(forced.segments) == 1
    async with kit.running():
        await wait_for(lambda: settled(kit), what="the forced replay processed")
    assert await kit.counts() == {"bad": 2}
