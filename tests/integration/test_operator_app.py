"""The whole operator wired up: real Sentinels and bucket (shared stack), fake Kubernetes API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from shopipe.address import fmt
from shopipe.config import OperatorSettings, load_settings
from shopipe_devstack import Stack
from shopipe_operator.app import Operator
from shopipe_operator.backends.kubernetes import KubernetesBackend

from tests.k8s_fake import FakeKube

pytestmark = pytest.mark.integration


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube().start()
    fake.state.replicas["shopipe-worker"] = 0
    try:
        yield fake
    finally:
        fake.stop()


@pytest.mark.asyncio
async def test_operator_leads_scales_serves_and_hands_the_lease_back(
    stack: Stack, kube: FakeKube
) -> None:
    env = {
        **stack.info.service_env(),
        "SHOPIPE_BACKEND": "kubernetes",
        "SHOPIPE_HTTP_PORT": "0",
        "SHOPIPE_POD_NAME": "operator-0",
        "SHOPIPE_RECONCILE_SECONDS": "0.2",
        "SHOPIPE_LEASE_SECONDS": "3",
        "SHOPIPE_MIN_WORKERS": "2",
        "SHOPIPE_MAX_WORKERS": "2",
    }
    s = load_settings(OperatorSettings, env)
    op = Operator(s, backend=KubernetesBackend(s, kube.api_client()))
    await op.start()
    try:
        deadline = time.monotonic() + 20
        while kube.state.replicas["shopipe-worker"] != 2:
            assert time.monotonic() < deadline, "the operator never scaled"
            await asyncio.sleep(0.05)
        assert kube.state.leases["shopipe-operator"]["spec"]["holderIdentity"] == "operator-0"
        assert op.server is not None
        base = f"http://{s.http_host}:{op.server.port}"
        async with httpx.AsyncClient(timeout=2.0) as c:
            assert (await c.get(f"{base}/healthz")).status_code == 200
            status = (await c.get(f"{base}/status")).json()
            metrics = (await c.get(f"{base}/metrics")).text
        assert status["service"] == "operator"
        assert status["leader"] is True
        assert status["majority"] is True
        assert status["master"] == fmt(stack.current_master())
        assert "shopipe_operator_leader 1.0" in metrics
        assert "shopipe_operator_sentinel_majority 1.0" in metrics
        assert f'shopipe_operator_master_info{{address="{status["master"]}"}} 1.0' in metrics
        # Redis memory from the master's INFO memory, against the shared policy's maxmemory.
        mem = status["redis_memory"]
        assert 0 < mem["used_bytes"] < mem["maxmemory_bytes"] == 768 * 2**20
        assert mem["fragmentation_ratio"] > 0
        gauges = dict(line.split(" ", 1) for line in metrics.splitlines() if line[:1] != "#")
        assert float(gauges["shopipe_redis_maxmemory_bytes"]) == 768 * 2**20
        assert float(gauges["shopipe_redis_used_memory_bytes"]) > 0
        assert float(gauges["shopipe_redis_memory_fragmentation_ratio"]) > 0
    finally:
        await op.stop()
    assert kube.state.leases["shopipe-operator"]["spec"].get("holderIdentity") is None
