"""A supervised stack (`shopipe dev`) restarts what dies, as the kubelet does: a master killed
with SIGKILL comes back with its data directory and arguments, as a replica of the one promoted
meanwhile, twice in a row; Sentinel and S3 come back too; `shopipe dev status` shows it. And
the config files holding passwords stay 0600 after Redis and Sentinel rewrite them."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from shopipe.address import Address, fmt
from shopipe_devstack import Stack
from shopipe_devstack.records import ProcRecord
from shopipe_devstack.redis import client
from shopipe_devstack.services import spawn_service, wait_healthy
from shopipe_devstack.supervisor import Backoff

pytestmark = pytest.mark.integration

# Short delays, so the test does not wait the minutes `shopipe dev`'s backoff allows; the
# master is held dead until the failover instead (Supervisor.held).
FAST = Backoff(initial=0.2, cap=1.0, reset_after=60.0)
SIGKILL_EXIT = "signal 9 (SIGKILL)"


def _poll(what: str, check: Callable[[], str | None], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    reason = "not checked"
    while time.monotonic() < deadline:
        reason = check() or ""
        if not reason:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: {reason}")


def _record(stack: Stack, name: str) -> ProcRecord:
    rec = stack.table.get(name)
    assert rec is not None, name
    return rec


def _restarted(stack: Stack, name: str, old_pid: int) -> Callable[[], str | None]:
    def check() -> str | None:
        rec = stack.table.get(name)
        if rec is None or rec.pid == old_pid or not stack.table.alive(name):
            return f"{name} not restarted yet"
        return None

    return check


def _private_configs(state_dir: Path) -> dict[str, str]:
    """Modes of the config files other than 0600 (empty: all private)."""
    confs = list((state_dir / "redis").glob("*/redis.conf"))
    confs += list((state_dir / "sentinel").glob("*/sentinel.conf"))
    assert len(confs) == 6  # three Redis nodes (the chart's default) and three Sentinels
    return {
        str(p): oct(stat.S_IMODE(p.stat().st_mode))
        for p in confs
        if stat.S_IMODE(p.stat().st_mode) != 0o600
    }


def test_a_killed_master_comes_back_as_a_replica_twice_in_a_row(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(supervise=True, backoff=FAST)
    assert stack.supervisor is not None
    info = stack.info
    pw = info.redis_password
    names = {addr: f"redis-{i}" for i, addr in enumerate(info.redis_nodes)}
    dirs: dict[str, str] = {}
    for addr, name in names.items():
        with client(addr, pw) as r:
            dirs[name] = str(r.config_get("dir")["dir"])
    key = f"test:{uuid.uuid4().hex}"
    with client(stack.current_master(), pw) as r:
        r.set(key, "before")

    killed: list[str] = []
    for round_ in (1, 2):
        old = stack.current_master()
        name = names[old]
        killed.append(name)
        before = _record(stack, name)
        with stack.supervisor.held(name):
            os.kill(before.pid, signal.SIGKILL)  # kill -9
            new = stack.wait_failover(old, timeout=30)
        _poll(f"{name} restarted", _restarted(stack, name, before.pid))

        def rejoined(old: Address = old, new: Address = new) -> str | None:
            try:
                with client(old, pw) as r:
                    repl = r.info("replication")
            except redis.RedisError as e:  # restarting or loading: poll again
                return f"{fmt(old)}: {type(e).__name__}"
            if repl.get("role") != "slave" or repl.get("master_port") != new[1]:
                return f"{fmt(old)} is not a replica of {fmt(new)} yet"
            if repl.get("master_link_status") != "up":
                return f"{fmt(old)}: link to {fmt(new)} not up yet"
            return None

        # Sentinel turns the returned master into a replica once it has reported its role for
        # 8 s; a Sentinel whose timer ran late (a loaded machine) is in TILT mode and takes no
        # action for 30 s: so up to 8 + 30 s, and a margin.
        _poll(f"round {round_}: old master rejoined", rejoined, timeout=60.0)
        after = _record(stack, name)
        assert after.argv == before.argv  # same arguments (the same config file)
        assert (after.restarts, after.last_exit) == (1, SIGKILL_EXIT)
        with client(old, pw) as r:
            assert r.config_get("dir")["dir"] == dirs[name]  # same data directory
            assert r.get(key) == "before"
        with client(new, pw) as r:
            r.set(f"{key}:{round_}", "written")
        # Sentinel rewrote the configs of both nodes and its own: still 0600.
        assert _private_configs(info.state_dir) == {}

    status = subprocess.run(
        [sys.executable, "-m", "shopipe", "dev", "status", "--state-dir", str(info.state_dir)],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")},
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {ln.split()[0]: ln for ln in status.stdout.splitlines() if ln.startswith("  redis-")}
    # The Sentinels promote either replica: the second master killed is redis-1 or redis-2.
    assert killed[0] == "redis-0"
    assert killed[1] != "redis-0"
    for name in killed:
        assert "running" in lines[name]
        assert f"restarts 1, last exit {SIGKILL_EXIT}" in lines[name]


def test_a_killed_sentinel_s3_and_service_come_back(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(supervise=True, backoff=FAST)
    info = stack.info
    receiver = spawn_service(stack.table, info, "receiver")
    wait_healthy(stack.table, receiver, info.bind)
    pids = {name: _record(stack, name).pid for name in ("sentinel-1", "s3", "receiver")}
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    for name, pid in pids.items():
        _poll(f"{name} restarted", _restarted(stack, name, pid))
        assert _record(stack, name).restarts == 1
    # Serving again: the Sentinel knows its peers, the bucket is there, the receiver answers
    # on its port with the environment it had (its secrets included).
    for comp in stack.components:
        if comp.name in ("sentinels", "s3"):
            comp.wait_ready(time.monotonic() + 60)
    wait_healthy(stack.table, receiver, info.bind, timeout=60)
    assert _record(stack, "receiver").meta["port"] == str(receiver.port)


def test_without_supervision_a_killed_process_stays_dead(make_stack: Callable[..., Stack]) -> None:
    # The suite's default: drills kill processes and restart them themselves.
    stack = make_stack()
    assert stack.supervisor is None
    rec = _record(stack, "sentinel-2")
    os.kill(rec.pid, signal.SIGKILL)
    assert stack.table.wait_exit("sentinel-2", 10.0)
    assert not stack.table.alive("sentinel-2")
