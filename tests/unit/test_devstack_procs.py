"""The process table: spawn, stop with escalation, cross-process use, never a stranger's pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.records import ProcRecord, is_ours, ledger_survivors

pytestmark = pytest.mark.unit

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]
# Ignores SIGTERM, so only the SIGKILL after the deadline stops it.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)",
]
# Forks a grandchild in the same process group and prints its pid.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "print('child', c.pid, flush=True); time.sleep(120)",
]


def _wait_log(table: ProcessTable, name: str, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = table.log_path(name).read_text()
        if text in content:
            return content
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {name}'s log")


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_spawn_logs_and_stop(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    pid = table.spawn("sleeper", SLEEPER)
    assert table.alive("sleeper")
    assert _wait_log(table, "sleeper", "up")
    rec = table.get("sleeper")
    assert rec is not None
    assert rec.pid == pid
    table.stop("sleeper", timeout=5)
    assert not table.alive("sleeper")
    assert table.get("sleeper") is None
    assert not _pid_alive(pid)


def test_stop_escalates_to_sigkill_after_the_deadline(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    pid = table.spawn("stubborn", STUBBORN)
    _wait_log(table, "stubborn", "ready")
    table.stop("stubborn", timeout=0.2)
    assert not _pid_alive(pid)


def test_stop_kills_the_whole_process_group(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    table.spawn("parent", PARENT)
    line = _wait_log(table, "parent", "child ")
    grandchild = int(line.split("child ")[1].split()[0])
    assert _pid_alive(grandchild)
    table.stop("parent", timeout=5)
    deadline = time.monotonic() + 10
    while _pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _pid_alive(grandchild)


def test_another_process_can_stop_what_this_one_started(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    pid = table.spawn("sleeper", SLEEPER)
    code = (
        "import sys; from pathlib import Path; from shopipe_devstack.procs import ProcessTable; "
        "t = ProcessTable(Path(sys.argv[1])); assert [r.name for r in t.records()] == "
        "['sleeper']; t.stop('sleeper', 5)"
    )
    subprocess.run([sys.executable, "-c", code, str(stack_dir)], check=True, timeout=60)
    table.wait_exit("sleeper", 10)  # reaps our child
    assert not _pid_alive(pid)
    assert table.records() == []


def test_a_reused_pid_is_never_signalled(stack_dir: Path) -> None:
    stranger = subprocess.Popen(SLEEPER, stdout=subprocess.DEVNULL)
    try:
        table = ProcessTable(stack_dir)
        forged = ProcRecord(
            name="old", pid=stranger.pid, starttime=1, argv=tuple(SLEEPER), log="", seq=0
        )
        (table.dir / "old.json").write_text(forged.to_json())
        assert not is_ours(forged)
        assert not table.alive("old")
        table.stop("old", timeout=0.1)
        table.stop_all(timeout=0.1)
        assert stranger.poll() is None  # still running: it was never ours
        assert table.get("old") is None
    finally:
        stranger.kill()
        stranger.wait(10)


def test_stale_processes_of_a_crashed_run_are_stopped_by_a_new_table(stack_dir: Path) -> None:
    crashed = ProcessTable(stack_dir)
    pids = [crashed.spawn(f"p{i}", SLEEPER) for i in range(3)]
    assert sorted(n for n, _ in ledger_survivors(stack_dir)) == ["p0", "p1", "p2"]
    fresh = ProcessTable(stack_dir)
    fresh.stop_all(timeout=5)
    crashed.stop_all(timeout=0)  # reaps our children; nothing left to signal
    assert not any(_pid_alive(p) for p in pids)
    assert ledger_survivors(stack_dir) == []


def test_stop_many_stops_in_parallel_and_clears_records(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    pids = [table.spawn(f"w{i}", STUBBORN) for i in range(3)]
    for i in range(3):
        _wait_log(table, f"w{i}", "ready")
    table.stop_many(["w0", "w1", "w2"], timeout=0.2)
    assert not any(_pid_alive(p) for p in pids)
    assert table.records() == []


def test_a_running_name_cannot_be_spawned_twice(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    table.spawn("one", SLEEPER)
    try:
        with pytest.raises(Exception, match="already running"):
            table.spawn("one", SLEEPER)
    finally:
        table.stop("one", 5)


def test_signal_reaches_only_the_named_process(stack_dir: Path) -> None:
    table = ProcessTable(stack_dir)
    a = table.spawn("a", SLEEPER)
    b = table.spawn("b", SLEEPER)
    assert table.signal("a", signal.SIGKILL)
    assert table.wait_exit("a", 10)
    assert not _pid_alive(a)
    assert _pid_alive(b)
    assert not table.signal("a", signal.SIGKILL)
    table.stop_all(5)
    assert os.path.exists(table.log_path("b"))
