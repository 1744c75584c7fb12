"""`shopipe dev` as a developer runs it: summary when ready, down, crash recovery, clear errors."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from shopipe_devstack import Ports, ProcessTable, Stack, StackError, StackInfo
from shopipe_devstack.records import ledger_survivors

from tests.cli_kit import shopipe

pytestmark = pytest.mark.integration

READY_TIMEOUT = 60.0


class DevProcess:
    """A `shopipe dev up` subprocess whose output lines are collected by a thread."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shopipe", "dev", "up", "--state-dir", str(state_dir),
             "--no-services", "--sentinel-down-after-ms", "1000", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = READY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from shopipe dev; output:\n{''.join(self.seen)}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def dev_up(state_dir: Path, *args: str) -> Iterator[DevProcess]:
    dev = DevProcess(state_dir, *args)
    try:
        yield dev
    finally:
        dev.close()


def test_dev_up_prints_the_summary_and_dev_down_stops_everything(stack_dir: Path) -> None:
    with dev_up(stack_dir) as dev:
        dev.wait_for("ready in")
        dev.wait_for("stop ")
        out = "".join(dev.seen)
        info = StackInfo.load(stack_dir)
        for expected in (
            "webhook URL",
            str(info.shopify_secret_file),
            ", ".join(f"{h}:{p}" for h, p in info.sentinels),
            info.s3_endpoint,
            f"bucket {info.s3_bucket}",
            str(info.log_dir),
            "shopipe dev down",
            "supervision     restarts what dies after 10 s doubling to 120 s",
        ):
            assert expected in out
        for secret in (info.redis_password, info.s3_secret_key, info.shopify_secret):
            assert secret not in out  # only with --show-secrets

        status = shopipe("dev", "status", "--state-dir", str(stack_dir), timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "sentinel-2" in status.stdout
        assert "DEAD" not in status.stdout

        # `shopipe dev` supervises: a killed process is restarted (after its backoff, 10 s).
        killed = ProcessTable(stack_dir).get("sentinel-2")
        assert killed is not None
        os.kill(killed.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            status = shopipe("dev", "status", "--state-dir", str(stack_dir), timeout=120)
            line = next(ln for ln in status.stdout.splitlines() if "sentinel-2" in ln)
            if "running" in line and "restarts 1" in line:
                break
            time.sleep(0.5)
        assert "running" in line
        assert "restarts 1, last exit signal 9 (SIGKILL)" in line
        assert status.returncode == 0

        again = shopipe("dev", "up", "--state-dir", str(stack_dir), "--no-services", timeout=120)
        assert again.returncode == 1
        assert "already running" in again.stderr

        down = shopipe("dev", "down", "--state-dir", str(stack_dir), timeout=120)
        assert down.returncode == 0, down.stderr
        assert dev.wait_exit() == 0
        assert "shopipe dev: stopped" in "".join(dev.seen)
    assert ledger_survivors(stack_dir) == []
    assert ProcessTable(stack_dir).records() == []


def test_a_second_dev_up_after_a_crash_replaces_the_stale_processes(stack_dir: Path) -> None:
    with dev_up(stack_dir) as first:
        first.wait_for("ready in")
        old = {r.name: r.pid for r in ProcessTable(stack_dir).records()}
        first.proc.kill()  # a crash: its servers live on in their own sessions
        first.wait_exit()
    assert sorted(n for n, _pid in ledger_survivors(stack_dir)) == sorted(old)

    with dev_up(stack_dir) as second:
        second.wait_for("ready in")
        survivors = dict(ledger_survivors(stack_dir))
        assert set(survivors) == set(old)
        assert not set(survivors.values()) & set(old.values())
        second.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert second.wait_exit() == 0
    assert ledger_survivors(stack_dir) == []


def test_a_component_that_cannot_start_is_named_with_its_log(stack_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(stack_dir, ports=Ports(redis=(port, 0, 0)))
        with pytest.raises(StackError) as e:
            stack.start()
    message = str(e.value)
    assert "redis-0" in message
    assert str(stack_dir / "logs" / "redis-0.log") in message
    assert ledger_survivors(stack_dir) == []  # what had started (SeaweedFS) was stopped


def test_a_free_port_taken_before_the_server_binds_it_is_replaced(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shopipe_devstack.stack as stack_module
    from shopipe_devstack.state import free_ports as real

    calls: list[int] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def racy(n: int, host: str = "127.0.0.1") -> list[int]:
            ports = real(n, host)
            calls.append(n)
            if len(calls) == 1:
                ports[5] = port  # the port the plan gives redis-0: someone else got it first
            return ports

        monkeypatch.setattr(stack_module, "free_ports", racy)
        stack = Stack(stack_dir)
        try:
            info = stack.start()
            assert len(calls) == 2
            assert info.redis_nodes[0][1] != port
            assert "already in use" in (stack_dir / "logs" / "redis-0.log").read_text().lower()
            assert stack.current_master() == info.redis_nodes[0]
        finally:
            stack.stop()
