"""`shopipe backlog` and `shopipe dlq list|replay` as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import pytest_asyncio
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings, load_settings
from shopipe.sentinel import MasterClient, RedisTarget
from shopipe.stream import Keys, announce, ensure_group
from shopipe_devstack import Stack
from shopipe_worker.deadletter import Document
from shopipe_worker.events import Event

from tests.cli_kit import shopipe

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, stack: Stack) -> None:
        tag = uuid.uuid4().hex[:10]
        self.shopipe = {
            **stack.info.service_env(),
            "SHOPIPE_KEY_PREFIX": f"c{tag}",
            "SHOPIPE_STREAM": f"c{tag}:webhooks",
            "SHOPIPE_CONSUMER_GROUP": f"c{tag}-workers",
            "SHOPIPE_S3_BUCKET": f"cli-{tag}",
            "SHOPIPE_LOG_LEVEL": "warning",
        }
        self.settings = load_settings(WorkerSettings, self.shopipe)
        self.store = Buffer(self.settings)
        self.master = MasterClient(RedisTarget.from_settings(self.settings), service="t", pod=tag)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return shopipe(*args, env=self.shopipe)


@pytest_asyncio.fixture
async def cli(stack: Stack):
    e = Env(stack)
    await e.store.ensure_bucket()
    try:
        yield e
    finally:
        await e.master.close()
        e.store.close()


def record(name: str, i: int, topic: str, wid: str) -> segment.Record:
    headers = {"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": wid}
    return segment.Record(segment.record_id(name, i), time.time() - 5, headers, b"{}")


@pytest.mark.asyncio
async def test_backlog_reports_stream_and_bucket(cli: Env):
    s = cli.settings
    r = await cli.master.get()
    await ensure_group(r, s.stream, s.consumer_group)
    for _ in range(3):
        name = segment.new_name(time.time() - 10)
        key = segment.incoming_key(name)
        await cli.store.put_segment(key, segment.encode([record(name, 0, "test/x", "w")]))
        await announce(r, s.stream, key, 1, s.stream_maxlen)
    await r.xreadgroup(s.consumer_group, "someone", {s.stream: ">"}, count=1)
    out = cli.run("backlog", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["stream_length"] == 3
    assert doc["lag"] == 2
    assert doc["pending"] == 1
    assert doc["incoming_objects"] == 3
    assert doc["oldest_seconds"] >= 10


async def dead_letter(cli: Env, ev: Event) -> None:
    key = segment.incoming_key(ev.record_id.split(":")[0])
    doc = Document.of(ev, key, "Error: x", 8, reason="header_body_mismatch")
    await cli.store.put_json(segment.dead_letter_key(ev.record_id), doc.to_json())


async def replayed_webhook_ids(cli: Env) -> list[str]:
    out = []
    for obj in await cli.store.list(segment.INCOMING):
        out += [
            r.headers["x-shopify-webhook-id"] for r in segment.decode(await cli.store.get(obj.key))
        ]
    return sorted(out)


@pytest.mark.asyncio
async def test_dlq_list_and_replay_by_topic(cli: Env):
    s = cli.settings
    name = segment.new_name()
    plan = [("orders/create", "a"), ("products/update", "b"), ("orders/create", "c")]
    events = [Event.from_record(record(name, i, t, w)) for i, (t, w) in enumerate(plan)]
    for ev in events:
        await dead_letter(cli, ev)
    r = await cli.master.get()
    done_a = Keys(s.key_prefix).done_webhook(events[0].shop, events[0].topic, "a")
    await r.set(done_a, "old")  # a delivery of `a` took effect meanwhile (Shopify's retry)

    listed = cli.run("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["topic"] for line in listed.stdout.splitlines()) == [
        "orders/create",
        "orders/create",
        "products/update",
    ]
    assert {json.loads(line)["reason"] for line in listed.stdout.splitlines()} == {
        "header_body_mismatch"
    }
    assert cli.run("dlq", "replay").returncode == 2  # says what to replay

    replayed = cli.run("dlq", "replay", "--topic", "orders/create")
    assert replayed.returncode == 0, replayed.stderr
    assert "\r" not in replayed.stderr  # not a terminal: no progress frames
    assert f"already done, skipped: {events[0].record_id}" in replayed.stderr
    assert "replayed 1 records" in replayed.stderr
    left = [json.loads(line)["topic"] for line in cli.run("dlq", "list").stdout.splitlines()]
    assert left == ["products/update"]
    assert await r.get(done_a) == b"old"  # the done-marker is kept
    assert await replayed_webhook_ids(cli) == ["c"]
    assert await r.xlen(s.stream) == 1


@pytest.mark.asyncio
async def test_dlq_replay_of_a_done_record_needs_force_and_says_so(cli: Env):
    s = cli.settings
    ev = Event.from_record(record(segment.new_name(), 0, "orders/create", "a"))
    await dead_letter(cli, ev)
    r = await cli.master.get()
    done = Keys(s.key_prefix).done_webhook(ev.shop, ev.topic, "a")
    await r.set(done, "old")

    forced = cli.run("dlq", "replay", "--force", ev.record_id)
    assert forced.returncode == 0, forced.stderr
    assert f"already done, run again (--force): {ev.record_id}" in forced.stderr
    assert "--force: 1 records that were already done ran again" in forced.stderr
    assert not await r.exists(done)  # forced: the record takes effect again
    assert await replayed_webhook_ids(cli) == ["a"]
