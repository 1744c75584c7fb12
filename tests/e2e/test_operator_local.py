"""The operator's local backend against the real stack and real `shopipe worker` processes.

Each test gets a private stack (it kills Redis, reconfigures Sentinels or floods the stream).
The operator runs as `shopipe dev` runs it, a `python -m shopipe operator` process under the
stack's process table; the test reads its decisions from its /status and /metrics.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis
from shopipe.address import fmt
from shopipe.buffer import Buffer
from shopipe.config import OperatorSettings, load_settings
from shopipe.segment import Record, encode, incoming_key, new_name, record_id
from shopipe.sentinel import MasterClient, RedisTarget
from shopipe.shopify import WebhookHeaders, sample
from shopipe.stream import announce, ensure_group
from shopipe_devstack import Stack
from shopipe_devstack.info import StackInfo
from shopipe_devstack.redis import client, redis_binary
from shopipe_devstack.services import Service, services, spawn_service, wait_healthy
from shopipe_devstack.state import free_ports
from shopipe_receiver.sender import signed_headers

pytestmark = pytest.mark.e2e


OP_ENV = {
    "SHOPIPE_RECONCILE_SECONDS": "0.3",
    "SHOPIPE_LISTING_INTERVAL_SECONDS": "0.5",
    "SHOPIPE_REDIS_TIMEOUT_SECONDS": "0.5",
}


async def start_operator(stack: Stack, **kw: str) -> Service:
    env = {**OP_ENV, **{f"SHOPIPE_{k.upper()}": v for k, v in kw.items()}}
    svc = spawn_service(stack.table, stack.info, "operator", "operator", extra_env=env)
    await asyncio.to_thread(wait_healthy, stack.table, svc, stack.info.bind, 60.0)
    return svc


async def op_status(op: Service) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2.0) as c:
        resp = await c.get(f"http://127.0.0.1:{op.port}/status")
    out: dict[str, Any] = resp.json()
    return out


async def decisions(op: Service, kind: str, reason: str) -> float:
    async with httpx.AsyncClient(timeout=2.0) as c:
        text = (await c.get(f"http://127.0.0.1:{op.port}/metrics")).text
    want = f'shopipe_operator_decisions_total{{kind="{kind}",reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(want):
            return float(line[len(want) :])
    return 0.0


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def reported_master(svc: Service) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=1.0) as c:
            resp = await c.get(f"http://127.0.0.1:{svc.port}/status")
        value = resp.json().get("redis_master")
    except (httpx.HTTPError, ValueError):
        return None
    return value if isinstance(value, str) else None


async def start_worker(stack: Stack, name: str, **env: str) -> Service:
    svc = spawn_service(stack.table, stack.info, "worker", name, extra_env=env)
    await asyncio.to_thread(wait_healthy, stack.table, svc, stack.info.bind, 60.0)
    return svc


async def start_receiver(stack: Stack, name: str) -> Service:
    svc = spawn_service(stack.table, stack.info, "receiver", name)
    await asyncio.to_thread(wait_healthy, stack.table, svc, stack.info.bind, 60.0)
    return svc


async def send_one(stack: Stack, receiver: Service) -> None:
    """One signed webhook, acknowledged: the receiver has used Redis (announced it)."""
    body = b'{"id": 1}'
    headers = signed_headers("orders/create", body, stack.info.shopify_secret)
    async with httpx.AsyncClient(timeout=10.0) as c:
        resp = await c.post(
            receiver.url(stack.info.bind, "/webhooks/shopify"), content=body, headers=headers
        )
    assert resp.status_code == 200


def pid_of(stack: Stack, name: str) -> int | None:
    rec = stack.table.get(name)
    return rec.pid if rec is not None and stack.table.alive(name) else None


@pytest.mark.asyncio
async def test_kill_master_restarts_only_the_worker_pinned_to_it(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    old = stack.current_master()
    follower = await start_worker(stack, "worker-0")
    # Deliberately misconfigured: a fixed address, no Sentinel, so it cannot follow a failover.
    pinned = await start_worker(
        stack, "worker-1", SHOPIPE_SENTINELS="", SHOPIPE_REDIS_URL=f"redis://{fmt(old)}/0"
    )
    await until("worker-0 on the master", lambda: _reports(follower, fmt(old)), 30)
    await until("worker-1 on the master", lambda: _reports(pinned, fmt(old)), 30)

    op = await start_operator(stack, min_workers="2", max_workers="2", stale_grace_seconds="3")
    await until("a few reconciles", _reconciled(op, 5), 30)
    assert (await op_status(op))["restarts"] == []  # nothing is stale before the failover

    await asyncio.to_thread(stack.kill_redis, old)
    new = await asyncio.to_thread(stack.wait_failover, old, 30.0)
    await until("the pinned worker restarted", _restarted(op, "worker-1"), 60)
    await until("it reports the new master", lambda: _reports(pinned, fmt(new)), 60)
    await until("the follower on the new master", lambda: _reports(follower, fmt(new)), 30)

    status = await op_status(op)
    assert status["master"] == fmt(new)
    assert status["failovers"] == 1
    assert [(r["pod"], r["reason"]) for r in status["restarts"]] == [
        ("worker-1", "status_names_old_master")
    ]
    assert pid_of(stack, "worker-0") == follower.pid  # never touched
    assert pid_of(stack, "worker-1") not in (None, pinned.pid)


@pytest.mark.asyncio
async def test_graceful_failover_idle_pods_left_alone_the_pinned_one_restarted(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    old = stack.current_master()
    receiver = await start_receiver(stack, "receiver-0")
    await send_one(stack, receiver)  # connected once, then idle
    idle = await start_worker(stack, "worker-0")
    # Really holds its connection on the old master: a fixed address, no Sentinel.
    pinned = await start_worker(
        stack, "worker-1", SHOPIPE_SENTINELS="", SHOPIPE_REDIS_URL=f"redis://{fmt(old)}/0"
    )
    for svc in (receiver, idle, pinned):
        await until(f"{svc.name} on the master", functools.partial(_reports, svc, fmt(old)), 30)
    # The grace outlasts a moved process's old connection (closed a Redis timeout, 2 s, later).
    op = await start_operator(stack, min_workers="2", max_workers="2", stale_grace_seconds="6")
    await until("a few reconciles", _reconciled(op, 5), 30)

    # Graceful: the old master stays up as a replica, every connection to it stays open.
    with client(stack.info.sentinels[0], None) as s:
        s.sentinel_failover(stack.info.master_name)
    new = fmt(await asyncio.to_thread(stack.wait_failover, old, 30.0))
    await until("the idle receiver reports the new master", lambda: _reports(receiver, new), 10)
    await until("the idle worker reports the new master", lambda: _reports(idle, new), 10)
    await until("the pinned worker restarted", _restarted(op, "worker-1"), 60)
    await until("it reports the new master", lambda: _reports(pinned, new), 60)
    # Well past the grace period: nobody else was, or is, taken for stale.
    await until("twenty more reconciles", _reconciled(op, 20), 60)
    status = await op_status(op)
    assert [r["pod"] for r in status["restarts"]] == ["worker-1"]
    assert status["stale"] == []
    assert pid_of(stack, "receiver-0") == receiver.pid
    assert pid_of(stack, "worker-0") == idle.pid


@pytest.mark.asyncio
async def test_sentinels_without_a_majority_cause_no_restart(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    info = stack.info
    master = stack.current_master()
    other = _extra_redis(stack)
    _s0, s1, s2 = info.sentinels
    # One Sentinel still names the master, one names another server, one names nothing.
    with client(s1, None) as r:
        r.execute_command("SENTINEL", "REMOVE", info.master_name)
        r.execute_command("SENTINEL", "MONITOR", info.master_name, other[0], other[1], 2)
        r.execute_command("SENTINEL", "SET", info.master_name, "auth-pass", info.redis_password)
    with client(s2, None) as r:
        r.execute_command("SENTINEL", "REMOVE", info.master_name)

    # Whichever single Sentinel the operator believed, one of these would look stale.
    follower = await start_worker(stack, "worker-0")
    elsewhere = await start_worker(
        stack, "worker-1", SHOPIPE_SENTINELS="", SHOPIPE_REDIS_URL=f"redis://{fmt(other)}/0"
    )
    await until("worker-0 reports", lambda: _reports(follower, fmt(master)), 30)
    await until("worker-1 reports", lambda: _reports(elsewhere, fmt(other)), 30)

    op = await start_operator(stack, min_workers="2", max_workers="2", stale_grace_seconds="0")
    await until("ten reconciles", _reconciled(op, 10), 30)
    status = await op_status(op)
    assert status["majority"] is False
    assert status["master"] is None
    named = sorted(v for v in status["sentinels"].values() if v)
    assert named == sorted([fmt(master), fmt(other)])
    assert status["restarts"] == []
    assert await decisions(op, "skip", "master_unknown") >= 10
    assert await decisions(op, "restart", "status_names_old_master") == 0
    assert pid_of(stack, "worker-0") == follower.pid
    assert pid_of(stack, "worker-1") == elsewhere.pid


@pytest.mark.asyncio
async def test_backlog_of_2000_segments_scales_up_to_max_then_down_after_the_window(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    await _flood(stack.info, 2000)

    op = await start_operator(
        stack,
        min_workers="1",
        max_workers="3",
        target_backlog_per_worker="200",
        scale_down_window_seconds="3",
    )
    await until("workers scaled to max", lambda: _workers(stack, 3), 30)
    scaled = (await op_status(op))["scaled"]
    assert [(x["from"], x["to"], x["reason"]) for x in scaled] == [(0, 3, "below_min")]

    await until("the backlog drained", lambda: _drained(op), 180)
    await until("workers back to min", lambda: _workers(stack, 1), 60)
    scaled = (await op_status(op))["scaled"]
    steps = [(x["from"], x["to"], x["reason"]) for x in scaled]
    assert steps == [(0, 3, "below_min"), (3, 2, "backlog_low"), (2, 1, "backlog_low")]
    assert scaled[1]["at"] - scaled[0]["at"] >= 3  # never down before the window


# --- helpers ---


async def _reports(svc: Service, address: str) -> bool:
    return await reported_master(svc) == address


def _reconciled(op: Service, n: int) -> Callable[[], Awaitable[bool]]:
    first: list[int] = []

    async def check() -> bool:
        try:
            done = int((await op_status(op))["reconciles"])
        except httpx.HTTPError:
            return False
        first[:] = first or [done]
        return done - first[0] >= n

    return check


def _restarted(op: Service, pod: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(r["pod"] == pod for r in (await op_status(op))["restarts"])

    return check


async def _workers(stack: Stack, n: int) -> bool:
    found = await asyncio.to_thread(services, stack.table)
    return len([s for s in found if s.kind == "worker"]) == n


async def _drained(op: Service) -> bool:
    backlog = (await op_status(op))["backlog"]
    return backlog is not None and backlog["total"] == 0


def _extra_redis(stack: Stack) -> tuple[str, int]:
    """A fourth, standalone Redis with the stack's password, stopped with the stack."""
    port = free_ports(1, stack.info.bind)[0]
    home = stack.state_dir / "redis" / "extra"
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        *(redis_binary(), "--bind", stack.info.bind, "--port", str(port), "--dir", str(home)),
        *("--save", "", "--appendonly", "no", "--requirepass", stack.info.redis_password),
    ]
    stack.spawn("redis-extra", argv)
    addr = (stack.info.bind, port)
    deadline = time.monotonic() + 15
    while True:
        try:
            with client(addr, stack.info.redis_password) as r:
                if r.ping():
                    return addr
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "the extra redis did not start"
        time.sleep(0.05)


async def _flood(info: StackInfo, n: int) -> None:
    """``n`` one-record segments in incoming/, each announced on the stream."""
    s = load_settings(OperatorSettings, info.service_env())
    buf = Buffer(s, concurrency=16)
    mc = MasterClient(RedisTarget.from_settings(s), service="test", pod="flood")
    try:
        rr = await mc.get()
        await ensure_group(rr, s.stream, s.consumer_group)
        body = sample("orders/create")

        async def one() -> None:
            name = new_name()
            headers = WebhookHeaders(
                "orders/create", "flood.myshopify.com", f"wh-{uuid.uuid4().hex}"
            ).to_record()
            data = encode([Record(record_id(name, 0), time.time(), headers, body)])
            await buf.put_segment(incoming_key(name), data)
            await announce(rr, s.stream, incoming_key(name), 1, s.stream_maxlen)

        for start in range(0, n, 50):
            await asyncio.gather(*(one() for _ in range(start, min(n, start + 50))))
    finally:
        await mc.close()
        buf.close()
