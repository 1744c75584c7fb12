"""The Kubernetes backend through the real `kubernetes` client against an in-process fake API.

The master and the backlog are fixed by the test (small subclasses of the operator's own
watch and probe); everything Kubernetes-facing is real: requests, bodies, status codes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from shopipe.address import Address, fmt
from shopipe.config import OperatorSettings, Secret, load_settings
from shopipe.sentinel import RedisTarget
from shopipe_devstack import Stack
from shopipe_devstack.redis import client as redis_client
from shopipe_devstack.services import Service, spawn_service, wait_healthy
from shopipe_operator.app import make_elector
from shopipe_operator.backends.kubernetes import KubernetesBackend
from shopipe_operator.backlog import Backlog, BacklogProbe
from shopipe_operator.leader import AlwaysLeader, Elector, LeaseElector
from shopipe_operator.loop import Reconciler
from shopipe_operator.master import MasterView, MasterWatch
from shopipe_receiver.sender import signed_headers

from tests.k8s_fake import FakeKube, StatusServer

pytestmark = pytest.mark.integration

MASTER: Address = ("10.0.0.1", 6379)
OLD = "10.0.0.9:6379"
TARGET = RedisTarget(
    sentinels=(("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)),
    master_name="mymaster",
    password=None,
    sentinel_password=None,
    fixed=None,
    timeout=0.5,
)
SCALE = "/apis/apps/v1/namespaces/default/deployments/shopipe-worker/scale"


class FixedWatch(MasterWatch):
    def __init__(self, addr: Address | None) -> None:
        super().__init__(TARGET)
        self.addr = addr

    async def poll(self) -> MasterView:
        view = MasterView(self.addr)
        self._update(view)
        return view

    async def suspects(self) -> list[Address]:
        return []


class FixedBacklog(BacklogProbe):
    def __init__(self, total: int | None) -> None:
        super().__init__("shopipe:webhooks", "shopipe-workers", None, 0.0, 1000)
        self.total = total

    async def measure(self, r: Any) -> Backlog:
        self.last = Backlog(self.total, 0, 0)
        return self.last


def settings(**kw: Any) -> OperatorSettings:
    base: dict[str, Any] = {
        "s3_bucket": "bucket",
        "s3_access_key": Secret("k"),
        "s3_secret_key": Secret("s"),
        "pod_name": "op-a",
        "min_workers": 1,
        "max_workers": 10,
        "target_backlog_per_worker": 200,
        "scale_up_max_step": 4,
        "stale_grace_seconds": 0.0,
        "max_restarts_at_once": 1,
    }
    base.update(kw)
    return OperatorSettings(**base)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube().start()
    fake.state.replicas["shopipe-worker"] = 1
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def pods(kube: FakeKube) -> Iterator[dict[str, StatusServer]]:
    """Three pipeline pods: one on the current master, two still on the old one."""
    servers = {
        "worker-ok": StatusServer("10.0.0.1:6379"),
        "worker-old-a": StatusServer(OLD),
        "worker-old-b": StatusServer(OLD),
    }
    for name, srv in servers.items():
        kube.add_pod(name, srv.port)
    kube.add_pod("not-ours", servers["worker-old-a"].port, labels={"app": "other"})
    try:
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


class Op:
    """One operator replica: backend, reconciler, elector, its own client tag."""

    def __init__(
        self,
        kube: FakeKube,
        s: OperatorSettings,
        *,
        master: Address | None = MASTER,
        backlog: int | None = 0,
        elector: Elector | None = None,
    ) -> None:
        self.backend = KubernetesBackend(s, kube.api_client(agent=s.pod_name))
        self.elector = elector or AlwaysLeader()
        self.probe = FixedBacklog(backlog)
        self.watch = FixedWatch(master)
        self.rec = Reconciler(s, self.backend, self.watch, self.probe, self.elector)

    async def close(self) -> None:
        await self.rec.close()
        await self.backend.close()


def patched(kube: FakeKube, agent: str | None = None) -> list[int]:
    return [
        r.body["spec"]["replicas"]
        for r in kube.find("PATCH", SCALE + "$")
        if agent is None or r.agent == agent
    ]


def evicted(kube: FakeKube) -> list[str]:
    return [r.body["metadata"]["name"] for r in kube.find("POST", r"/pods/[^/]+/eviction$")]


@pytest.mark.asyncio
async def test_scale_up_patches_the_scale_subresource_in_bounded_steps(kube: FakeKube) -> None:
    op = Op(kube, settings(), backlog=2000)
    try:
        await op.rec.reconcile()
        await op.rec.reconcile()
        await op.rec.reconcile()
    finally:
        await op.close()
    assert patched(kube) == [5, 9, 10]
    assert {r.content_type for r in kube.find("PATCH", SCALE)} == {"application/merge-patch+json"}
    assert kube.state.replicas["shopipe-worker"] == 10
    assert [e["reason"] for e in kube.state.events] == ["Scaled"] * 3


@pytest.mark.asyncio
async def test_scale_down_waits_for_the_window_then_removes_one(kube: FakeKube) -> None:
    kube.state.replicas["shopipe-worker"] = 4
    op = Op(kube, settings(scale_down_window_seconds=0.3), backlog=0)
    try:
        await op.rec.reconcile()
        assert patched(kube) == []
        deadline = time.monotonic() + 10
        while not patched(kube) and time.monotonic() < deadline:
            await op.rec.reconcile()
    finally:
        await op.close()
    assert patched(kube) == [3]


@pytest.mark.asyncio
async def test_stale_pods_are_evicted_one_per_reconcile_and_healthy_ones_never(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    op = Op(kube, settings(max_restarts_at_once=1))
    try:
        await op.rec.reconcile()
        assert evicted(kube) == ["worker-old-a"]
        await op.rec.reconcile()
        await op.rec.reconcile()
    finally:
        await op.close()
    assert evicted(kube) == ["worker-old-a", "worker-old-b"]
    assert kube.find("DELETE", "/pods/") == []
    assert set(kube.state.pods) == {"worker-ok", "not-ours"}
    events = [e for e in kube.state.events if e["reason"] == "StaleMaster"]
    assert [e["involvedObject"]["name"] for e in events] == ["worker-old-a", "worker-old-b"]
    assert all(e["involvedObject"]["kind"] == "Pod" for e in events)


@pytest.mark.asyncio
async def test_a_failing_scale_step_does_not_stop_stale_restarts(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    del kube.state.replicas["shopipe-worker"]  # the Deployment is missing: 404 on its scale
    op = Op(kube, settings(), backlog=2000)
    try:
        await op.rec.reconcile()
    finally:
        await op.close()
    assert kube.find("GET", SCALE + "$")  # it tried
    assert patched(kube) == []
    assert evicted(kube) == ["worker-old-a"]


@pytest.mark.asyncio
async def test_pod_within_the_grace_period_is_left_alone(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    op = Op(kube, settings(stale_grace_seconds=3600.0))
    try:
        await op.rec.reconcile()
    finally:
        await op.close()
    assert evicted(kube) == []
    assert op.rec.status()["stale"] == []


@pytest.mark.asyncio
async def test_a_pod_already_gone_is_not_deleted(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    kube.state.eviction_status = 404
    op = Op(kube, settings(max_restarts_at_once=5))
    try:
        await op.rec.reconcile()
    finally:
        await op.close()
    assert evicted(kube) == ["worker-old-a", "worker-old-b"]
    assert kube.find("DELETE", "/pods/") == []
    assert [r["outcome"] for r in op.rec.restarts] == ["gone", "gone"]


@pytest.mark.asyncio
async def test_eviction_refused_is_an_error_never_a_delete(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    """No fallback to DELETE: it would pass the disruption budgets by (the Role has no pods
    delete); the restart step fails and the next reconcile tries the eviction again."""
    kube.state.eviction_status = 405
    op = Op(kube, settings())
    try:
        await op.rec.reconcile()
    finally:
        await op.close()
    assert evicted(kube) == ["worker-old-a"]
    assert kube.find("DELETE", "/pods/") == []
    assert "worker-old-a" in kube.state.pods
    assert list(op.rec.restarts) == []


@pytest.mark.asyncio
async def test_disruption_budget_429_is_respected_not_bypassed(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    kube.state.eviction_status = 429
    op = Op(kube, settings())
    try:
        await op.rec.reconcile()
        await op.rec.reconcile()
    finally:
        await op.close()
    assert evicted(kube) == ["worker-old-a", "worker-old-a"]  # tried again, never deleted
    assert kube.find("DELETE", "/pods/") == []
    assert "worker-old-a" in kube.state.pods
    assert list(op.rec.restarts) == []


@pytest.mark.asyncio
async def test_no_restart_while_the_master_is_unknown(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    op = Op(kube, settings(), master=None)
    try:
        await op.rec.reconcile()
    finally:
        await op.close()
    assert evicted(kube) == []
    assert kube.find("GET", "/pods$") == []  # not even looked at


@pytest.mark.asyncio
async def test_hpa_on_the_worker_deployment_means_no_scaling(kube: FakeKube) -> None:
    kube.state.hpas.append(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "workers", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "shopipe-worker",
                },
                "maxReplicas": 5,
            },
        }
    )
    op = Op(kube, settings(), backlog=2000)
    try:
        await op.rec.reconcile()
        await op.rec.reconcile()
    finally:
        await op.close()
    assert patched(kube) == []
    refused = [e for e in kube.state.events if e["reason"] == "ScaleRefused"]
    assert len(refused) == 1  # said once, not every reconcile
    assert "HorizontalPodAutoscaler/workers" in refused[0]["message"]
    assert op.rec.status()["replicas"]["desired"] == 10


@pytest.mark.asyncio
async def test_hpa_on_another_deployment_does_not_stop_scaling(kube: FakeKube) -> None:
    kube.state.hpas.append(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "receivers", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "shopipe-receiver"},
                "maxReplicas": 5,
            },
        }
    )
    op = Op(kube, settings(), backlog=400)
    try:
        await op.rec.reconcile()
    finally:
        await op.close()
    assert patched(kube) == [2]


@pytest.mark.asyncio
async def test_dry_run_decides_but_writes_nothing(
    kube: FakeKube, pods: dict[str, StatusServer]
) -> None:
    s = settings(dry_run=True, leader_election=True)
    backend = KubernetesBackend(s, kube.api_client())
    elector = make_elector(s, backend)
    await backend.close()
    assert isinstance(elector, AlwaysLeader)  # no Lease writes either
    op = Op(kube, s, backlog=2000, elector=elector)
    try:
        await op.elector.tick()
        await op.rec.reconcile()
        await op.rec.reconcile()
    finally:
        await op.close()
    assert kube.writes() == []
    assert kube.find("GET", SCALE)  # it did look
    assert kube.find("GET", "/pods$")
    status = op.rec.status()
    assert status["replicas"]["desired"] == 10
    assert status["stale"] == ["worker-old-a", "worker-old-b"]


@pytest.mark.asyncio
async def test_leader_election_hands_over_between_two_operators(kube: FakeKube) -> None:
    def elector(name: str) -> LeaseElector:
        return LeaseElector(kube.api_client(agent=name), "default", "shopipe-operator", name, 1.0)

    a = Op(kube, settings(pod_name="op-a"), backlog=2000, elector=elector("op-a"))
    b = Op(kube, settings(pod_name="op-b"), backlog=2000, elector=elector("op-b"))
    try:
        assert await a.elector.tick() is True
        assert await b.elector.tick() is False
        await a.rec.reconcile()
        await b.rec.reconcile()
        assert patched(kube, "op-a") == [5]
        assert patched(kube, "op-b") == []

        # a stops renewing (crashed): b takes over once the Lease has gone unrenewed.
        deadline = time.monotonic() + 10
        while not await b.elector.tick():
            assert time.monotonic() < deadline, "b never acquired the Lease"
        lease = kube.state.leases["shopipe-operator"]["spec"]
        assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("op-b", 1)
        await b.rec.reconcile()
        assert patched(kube, "op-b") == [9]

        # a comes back: it must not act while b holds the Lease.
        assert await a.elector.tick() is False
        await a.rec.reconcile()
        assert patched(kube, "op-a") == [5]

        # b hands the Lease back on shutdown: a takes over at once, no waiting.
        await b.elector.release()
        assert await a.elector.tick() is True
    finally:
        await a.close()
        await b.close()


# --- the Kubernetes backend on the real stack: real processes behind the fake pods ---


async def _reports(stack: Stack, svc: Service, master: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as c:
            resp = await c.get(svc.url(stack.info.bind, "/status"))
        return bool(resp.json().get("redis_master") == master)
    except (httpx.HTTPError, ValueError):
        return False


async def _poll(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_real_stack_graceful_failover_evicts_only_the_pod_on_the_old_master(
    make_stack: Callable[..., Stack], kube: FakeKube
) -> None:
    stack = make_stack()
    old_addr = stack.current_master()
    old = fmt(old_addr)

    def spawn(kind: str, name: str, **env: str) -> Service:
        svc = spawn_service(stack.table, stack.info, kind, name, extra_env=env)
        wait_healthy(stack.table, svc, stack.info.bind, 60.0)
        kube.add_pod(name, svc.port)
        return svc

    receiver = await asyncio.to_thread(spawn, "receiver", "receiver-0")
    body = b'{"id": 1}'
    headers = signed_headers("orders/create", body, stack.info.shopify_secret)
    async with httpx.AsyncClient(timeout=10.0) as c:
        url = receiver.url(stack.info.bind, "/webhooks/shopify")
        assert (await c.post(url, content=body, headers=headers)).status_code == 200
    idle = await asyncio.to_thread(spawn, "worker", "worker-0")
    pinned_env = {"SHOPIPE_SENTINELS": "", "SHOPIPE_REDIS_URL": f"redis://{old}/0"}
    pinned = await asyncio.to_thread(spawn, "worker", "worker-1", **pinned_env)
    for svc in (receiver, idle, pinned):
        await _poll(f"{svc.name} on the master", functools.partial(_reports, stack, svc, old), 30)

    s = load_settings(
        OperatorSettings,
        {
            **stack.info.service_env(),
            "SHOPIPE_POD_NAME": "op-a",
            "SHOPIPE_BACKEND": "kubernetes",
            # Outlasts a moved process's old connection (closed a Redis timeout, 2 s, later).
            "SHOPIPE_STALE_GRACE_SECONDS": "6",
            "SHOPIPE_REDIS_TIMEOUT_SECONDS": "0.5",
        },
    )
    backend = KubernetesBackend(s, kube.api_client(agent="op-a"))
    watch = MasterWatch(RedisTarget.from_settings(s))
    rec = Reconciler(s, backend, watch, FixedBacklog(0), AlwaysLeader())

    async def reconciled_until(what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            await rec.reconcile()
            if done():
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.3)

    try:
        for _ in range(3):
            await rec.reconcile()
        assert evicted(kube) == []
        # Graceful: the old master stays up as a replica, connections to it stay open.
        with redis_client(stack.info.sentinels[0], None) as r:
            r.sentinel_failover(stack.info.master_name)
        new = fmt(await asyncio.to_thread(stack.wait_failover, old_addr, 30.0))
        await reconciled_until("worker-1 evicted", lambda: evicted(kube) == ["worker-1"], 60)
        # Well past the grace period: the idle pods follow the new master and stay.
        started = time.monotonic()
        await reconciled_until("twice the grace", lambda: time.monotonic() - started > 12, 40)
    finally:
        await rec.close()
        await watch.close()
        await backend.close()
    assert evicted(kube) == ["worker-1"]
    assert [r["pod"] for r in rec.restarts] == ["worker-1"]
    assert await _reports(stack, receiver, new)
    assert await _reports(stack, idle, new)
