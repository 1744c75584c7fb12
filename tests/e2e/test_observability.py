"""The real Prometheus of the local stack watching real drills: targets, alerts, dashboard.

One stack for the module: Prometheus (scraping every 0.5 s, the chart's rules with every
duration divided by 60, so `for: 1m` is 1 s and `[15m]` is 15 s: promtool's unit tests in
tests/promtool check the timing at full scale), a receiver, two workers with the counting
handler and the operator. Each test injects its fault, waits for the alert to fire through
/api/v1/alerts, ends the fault and waits for the alert to resolve. A last test runs `shopipe dev`
itself: its Prometheus loads the chart's rule file unchanged, every target is up, and workers
the operator starts are scraped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from shopipe.address import fmt
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings, load_settings
from shopipe_devstack import Stack, prometheus
from shopipe_devstack.procs import ProcessTable

from tests.conftest import _new_stack
from tests.e2e.pipeline import Pipeline, exactly_once, until

# One worker runs the module, so its module-scoped Prometheus stack is started once.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("observability"),
    pytest.mark.skipif(
        prometheus.prometheus_binary() is None, reason="no prometheus binary (.ci/run installs it)"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SCALE = 60
DASHBOARD = ROOT / "charts/shopipe/files/dashboard.json"
RULES = ROOT / "charts/shopipe/files/alerts.rules.yaml"


class Prom:
    """The bits of the Prometheus HTTP API the tests read."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def get(self, path: str, **params: str) -> Any:
        async with httpx.AsyncClient(timeout=5.0) as c:
            resp = await c.get(self.url + path, params=params)
        doc = resp.json()
        assert doc["status"] == "success", (path, params, doc)
        return doc["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def alert(self, name: str) -> str | None:
        """``firing``, ``pending`` or None (inactive or resolved)."""
        states = {a["state"] for a in (await self.get("/api/v1/alerts"))["alerts"]
                  if a["labels"]["alertname"] == name}  # fmt: skip
        return "firing" if "firing" in states else ("pending" if states else None)

    async def targets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.get("/api/v1/targets"))["activeTargets"]
        return found

    async def wait_alert(self, name: str, state: str | None, timeout: float) -> None:
        async def reached() -> bool:
            return await self.alert(name) == state

        await until(f"{name} {state or 'resolved'}", reached, timeout)


class Observed:
    def __init__(self, stack: Stack, pipe: Pipeline, prom: Prom) -> None:
        self.stack, self.pipe, self.prom = stack, pipe, prom


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    stack = _new_stack(tmp_path_factory)
    assert prometheus.add(stack, interval="500ms", time_scale=SCALE)
    stack.start()
    try:
        # A forward route for a topic the load never sends: its series exist (at zero) for
        # the dashboard's forward row, and no delivery slows the pipeline.
        routes = tmp_path_factory.mktemp("forward") / "routes.json"
        route = {"topics": ["test/forwarded"], "url": "http://127.0.0.1:9/never"}
        routes.write_text(json.dumps({"routes": {"app": route}}))
        worker_env = {
            "SHOPIPE_BUILTIN_HANDLERS": "state,compliance,forward",
            "SHOPIPE_FORWARD_ROUTES_FILE": str(routes),
        }
        pipe = Pipeline(stack).start(workers=2, operator=True, worker_env=worker_env)
        comp = prometheus.of(stack)
        assert comp is not None
        yield Observed(stack, pipe, Prom(comp.url))
    finally:
        stack.stop()


@pytest_asyncio.fixture
async def loaded(observed: Observed) -> AsyncIterator[Observed]:
    """Steady webhooks for the whole test; ``observed.pipe.sent`` is this test's ledger."""
    observed.pipe.sent = []
    stop = asyncio.Event()
    task = asyncio.create_task(observed.pipe.load(stop, concurrency=2))
    try:
        yield observed
    finally:
        stop.set()
        await task


async def until_targets_up(
    prom: Prom, pods: set[str], timeout: float = 30, gone: str = ""
) -> list[Any]:
    """Wait until the targets are exactly ``pods``, all up (and none at instance ``gone``)."""
    found: list[Any] = []

    async def up() -> bool:
        nonlocal found
        found = await prom.targets()
        if any(t["labels"]["instance"] == gone for t in found):
            return False
        return {t["labels"]["pod"] for t in found} == pods and all(
            t["health"] == "up" for t in found
        )

    await until(f"targets {sorted(pods)} up", up, timeout)
    return found


@pytest.mark.asyncio
async def test_every_process_is_scraped_with_the_chart_labels_and_the_rules_loaded(
    observed: Observed,
):
    prom = observed.prom
    found = await until_targets_up(prom, {"receiver-0", "worker-0", "worker-1", "operator"})
    # Job and service as the chart's ServiceMonitor names them (the Service), so queries and
    # rules written against the cluster work here; the metrics' own `service` label is kept.
    jobs = {t["labels"]["pod"]: t["labels"]["job"] for t in found}
    assert jobs == {
        "receiver-0": "shopipe-receiver",
        "worker-0": "shopipe-worker",
        "worker-1": "shopipe-worker",
        "operator": "shopipe-operator",
    }
    infos = await prom.query("shopipe_build_info")
    assert {(s["metric"]["pod"], s["metric"]["service"]) for s in infos} == {
        ("receiver-0", "receiver"), ("worker-0", "worker"), ("worker-1", "worker"),
        ("operator", "operator"),
    }  # fmt: skip
    rules = [r for g in (await prom.get("/api/v1/rules"))["groups"] for r in g["rules"]]
    shipped = re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M)
    assert sorted(r["name"] for r in rules) == sorted(shipped)
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]


BAD_BODIES = [
    ("test/ping", b"this is not json"),  # the counting handler
    ("orders/create", b""),  # the built-in state handler
    ("orders/create", b"[1,2"),
    ("orders/create", b"\xff\xfe\x00binary"),
    ("orders/create", b'"a string, not an object"'),
]


@pytest.mark.asyncio
async def test_dead_lettered_records_fire_the_dead_letter_alert_which_then_resolves(
    loaded: Observed,
):
    prom, pipe = loaded.prom, loaded.pipe
    assert await prom.alert("ShopipeDeadLetters") is None
    # Valid signatures, bodies that are no JSON object: stored (200), then dead-lettered by
    # the worker with the reason, while the good webhooks around them flow on.
    bad = [pipe.webhook(body, topic=topic) for topic, body in BAD_BODIES]
    async with httpx.AsyncClient(timeout=30) as c:
        answers = [await c.post(pipe.url, content=b.body, headers=b.headers) for b in bad]
    assert [a.status_code for a in answers] == [200] * len(bad)
    await prom.wait_alert("ShopipeDeadLetters", "firing", 30)

    store = Buffer(load_settings(WorkerSettings, loaded.stack.info.service_env()))
    keys = [f"dead-letter/{a.json()['id']}.json" for a in answers]
    try:

        async def all_dead_lettered() -> bool:
            return all([await store.exists(k) for k in keys])

        await until("every bad body dead-lettered", all_dead_lettered, 30)
        letters = [json.loads(await store.get(k)) for k in keys]
    finally:
        store.close()
    assert [d["webhook_id"] for d in letters] == [b.webhook_id for b in bad]
    assert [d["error"].split(":")[0] for d in letters] == ["BadPayload"] * len(bad)
    assert [d["attempts"] for d in letters] == [1] * len(bad)  # permanent: not retried
    acked = pipe.acked()
    exactly_once(await pipe.wait_processed(acked, timeout=60), acked)
    # Nothing new for the (scaled) 15 minutes: resolved.
    await prom.wait_alert("ShopipeDeadLetters", None, 60)


@pytest.mark.asyncio
async def test_s3_stopped_fires_the_receiver_503_alert_which_resolves_once_it_is_back(
    loaded: Observed,
):
    stack, pipe, prom = loaded.stack, loaded.pipe, loaded.prom
    await until("webhooks flowing", lambda: pipe.answered(200) >= 20, 30)
    assert await prom.alert("ShopipeReceiverUnavailable") is None
    await asyncio.to_thread(stack.stop_s3)
    try:
        await prom.wait_alert("ShopipeReceiverUnavailable", "firing", 30)
        assert pipe.answered(503) > 0
    finally:
        await asyncio.to_thread(stack.start_s3)
    back = len(pipe.sent)
    await until("200s again", lambda: pipe.answered(200, back) >= 20, 60)
    await prom.wait_alert("ShopipeReceiverUnavailable", None, 30)
    acked = pipe.acked()
    exactly_once(await pipe.wait_processed(acked, timeout=60), acked)


async def masters_in_use(prom: Prom) -> dict[str, set[str]]:
    """pod -> the master addresses its shopipe_redis_master_info names now."""
    out: dict[str, set[str]] = {}
    for s in await prom.query("shopipe_redis_master_info == 1"):
        out.setdefault(s["metric"]["pod"], set()).add(s["metric"]["address"])
    return out


@pytest.mark.asyncio
async def test_master_kill_fires_the_failover_alert_and_moves_the_master_info_metrics(
    loaded: Observed,
):
    stack, pipe, prom = loaded.stack, loaded.pipe, loaded.prom
    # Every process names its master, the operator too (it reads the backlog there); the
    # operator's majority view has its own gauge as well, checked below.
    pods = {"receiver-0", "worker-0", "worker-1", "operator"}
    old = stack.current_master()
    await until("webhooks flowing", lambda: pipe.answered(200) >= 20, 30)

    async def everyone_on(addr: tuple[str, int]) -> bool:
        seen = await prom.query("max by (address) (shopipe_operator_master_info)")
        operator = [s["metric"]["address"] for s in seen]
        return operator == [fmt(addr)] and await masters_in_use(prom) == {
            pod: {fmt(addr)} for pod in pods
        }

    await until("every process on the first master", lambda: everyone_on(old), 30)
    assert await prom.alert("ShopipeRedisFailover") is None

    await asyncio.to_thread(stack.kill_redis, old)
    new = await asyncio.to_thread(stack.wait_failover, old, 30.0)
    await prom.wait_alert("ShopipeRedisFailover", "firing", 30)
    await until("every process on the new master", lambda: everyone_on(new), 30)
    reconnects = await prom.query("sum by (service) (shopipe_redis_reconnects_total)")
    assert {s["metric"]["service"] for s in reconnects} >= {"receiver", "worker"}

    # The old master back as a replica: the stack is whole again for the next test.
    await asyncio.to_thread(stack.restart_redis, old)
    acked = pipe.acked()
    exactly_once(await pipe.wait_processed(acked, timeout=90), acked)
    await prom.wait_alert("ShopipeRedisFailover", None, 60)  # (scaled) 10 minutes on


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row"
            for t in p["targets"]]  # fmt: skip


@pytest.mark.asyncio
async def test_every_dashboard_expression_returns_series_from_the_stack_under_load(
    loaded: Observed,
):
    pipe, prom = loaded.pipe, loaded.prom
    await until("webhooks flowing", lambda: pipe.answered(200) >= 20, 30)
    # What a day brings, so that no panel may rightly be empty: a handler failure and a dead
    # letter (a non-JSON body), and dropped Redis connections (every process reconnects).
    bad = pipe.webhook(b"[not json")
    async with httpx.AsyncClient(timeout=10) as c:
        assert (await c.post(pipe.url, content=bad.body, headers=bad.headers)).status_code == 200
    pipe.read(lambda r: r.client_kill_filter(_type="normal", skipme=True))

    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    empty: list[str] = []

    async def all_have_series() -> bool:
        empty.clear()
        for title, expr in exprs:
            # Grafana's $__rate_interval: a few scrape intervals of the local Prometheus; the
            # dashboard's $namespace: the one the local stack's targets carry.
            expr = expr.replace("$__rate_interval", "10s").replace(
                "$namespace", prometheus.NAMESPACE
            )
            if not await prom.query(expr):
                empty.append(f"{title}: {expr}")
        return not empty

    try:
        await until("every dashboard query to return series", all_have_series, 60)
    except AssertionError as e:
        raise AssertionError(f"{e}; empty:\n  " + "\n  ".join(empty)) from None


# --- `shopipe dev` itself ---


class Dev:
    def __init__(self, state_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
        self.out = state_dir.parent / f"{state_dir.name}-dev.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shopipe", "dev", "--state-dir", str(state_dir),
                 "--workers", "0", "--sentinel-down-after-ms", "1000"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.mark.asyncio
async def test_shopipe_dev_prints_a_prometheus_url_whose_targets_are_all_up(stack_dir: Path):
    dev = Dev(stack_dir)
    try:
        await until(
            "the summary", lambda: "  stop " in dev.text() or dev.proc.poll() is not None, 90
        )
        text = dev.text()
        assert dev.proc.poll() is None, text
        line = next(x for x in text.splitlines() if x.strip().startswith("prometheus"))
        url = line.split()[1]
        assert url.startswith("http://127.0.0.1:")
        prom = Prom(url)
        groups = (await prom.get("/api/v1/rules"))["groups"]
        # The chart's file itself, not a copy.
        assert {g["file"] for g in groups} == {str(RULES)}
        assert str(RULES) in line
        # `--workers 0`: the operator starts the one worker (its minimum) through the process
        # table, and Prometheus finds it there.
        pods = {"receiver", "operator", "worker-0"}
        found = await until_targets_up(prom, pods, 60)
        first = next(t["labels"]["instance"] for t in found if t["labels"]["pod"] == "worker-0")
        # The worker dies; the operator starts another (new port): the target follows.
        await asyncio.to_thread(ProcessTable(stack_dir).stop, "worker-0", 10.0)
        await until_targets_up(prom, pods, 60, gone=first)
    finally:
        code = dev.stop()
    assert code == 0, dev.text()
