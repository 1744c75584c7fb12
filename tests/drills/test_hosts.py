"""The machinery under the drills: a process spawned into a host's namespace is there, serves on
that host's address, and the operator's local backend restarts it in the same host."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from shopipe.config import OperatorSettings, load_settings
from shopipe_devstack.backend import LocalBackend
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.services import spawn_service
from shopipe_operator.backends.base import Pod

from tests.drills.faults import Faults
from tests.drills.hosts import NetStack
from tests.drills.netns import Net, run

pytestmark = pytest.mark.drill

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_spawn_into_a_namespace_runs_there(net: Net, stack_dir: Path):
    table = ProcessTable(stack_dir)
    pid = table.spawn("sleeper", SLEEPER, netns=net.ns("worker-1"))
    try:
        assert netns_inode(pid) == os.stat(f"/run/netns/{net.ns('worker-1')}").st_ino
        assert netns_inode(pid) != netns_inode(os.getpid())
    finally:
        table.stop("sleeper", 1.0)


def test_faults_cut_and_heal_leave_no_rule(net: Net):
    f = Faults(net)
    f.cut(["worker-0"], ["s3"], mode="reject", both=False)
    rules = run("ip", "netns", "exec", net.ns("worker-0"), "iptables", "-S", "OUTPUT")
    assert f"-d {net.ip('s3')}/32" in rules
    f.heal()
    rules = run("ip", "netns", "exec", net.ns("worker-0"), "iptables", "-S", "OUTPUT")
    assert "REJECT" not in rules


@pytest.mark.asyncio
async def test_the_local_operator_restarts_a_pod_in_its_own_host(net: Net, stack_dir: Path):
    state_dir = stack_dir
    stack = NetStack(state_dir, net)
    info = stack._plan()  # addresses and secrets only: no server is needed here
    info.save()
    env = {**info.service_env(), "SHOPIPE_BACKEND": "local"}
    backend = LocalBackend(load_settings(OperatorSettings, env), state_dir)
    try:
        svc = spawn_service(
            stack.table, info, "receiver", "receiver-1", port=8080,
            host=net.ip("receiver-1"), netns=net.ns("receiver-1"),
        )  # fmt: skip
        pods = await backend.pods()
        assert [p.status_url for p in pods] == [f"http://{net.ip('receiver-1')}:8080/status"]
        assert await backend.restart(Pod("receiver-1", None), "test") == "restarted"
        again = stack.table.get("receiver-1")
        assert again is not None
        assert again.pid != svc.pid
        assert again.meta["host"] == net.ip("receiver-1")
        assert netns_inode(again.pid) == os.stat(f"/run/netns/{net.ns('receiver-1')}").st_ino
    finally:
        # The backend's table reaps what it restarted (its child), the stack's the first one.
        await asyncio.to_thread(backend.table.stop_all, 1.0)
        await asyncio.to_thread(stack.table.stop_all, 1.0)


def test_without_cap_net_admin_a_drill_fails_with_one_clear_line(tmp_path: Path):
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop CAP_NET_ADMIN")
    res = subprocess.run(
        [
            "setpriv", "--bounding-set", "-net_admin", sys.executable, "-m", "pytest",
            "tests/drills/test_partitions.py", "-k", "one_sentinel", "-q", "-p",
            "no:cacheprovider", f"--basetemp={tmp_path}",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode != 0
    why = "the partition drills need root (CAP_NET_ADMIN) to create network namespaces"
    assert res.stdout.count(why) >= 1, res.stdout[-2000:]
    assert "Traceback" not in res.stdout
