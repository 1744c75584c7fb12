"""The dev stack's supervisor: restarts what dies with the same argv, env and umask, after a
backoff that doubles to a cap and starts over after a long run; leaves stopped, held and
replaced processes alone. Real processes; a fake clock for the delays."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.supervisor import Backoff, Supervisor

pytestmark = pytest.mark.unit

# Prints its environment's X and its umask, then waits to be killed.
SHOW = [
    sys.executable,
    "-c",
    "import os, time; print('run', os.environ.get('X'), oct(os.umask(0)), flush=True); "
    "time.sleep(120)",
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> Iterator[ProcessTable]:
    t = ProcessTable(tmp_path)
    try:
        yield t
    finally:
        t.stop_all(timeout=1.0)


def _runs(table: ProcessTable, name: str, expected: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        # Whole lines only: a line the process is still writing reads cut short.
        lines = table.log_path(name).read_text().split("\n")[:-1]
        runs = [ln for ln in lines if ln.startswith("run")]
        if len(runs) >= expected or time.monotonic() >= deadline:
            return runs
        time.sleep(0.02)


def _kill(table: ProcessTable, name: str) -> None:
    rec = table.get(name)
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    assert table.wait_exit(name, 10.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(initial=1.0, cap=5.0, reset_after=10.0)
    assert [b.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Backoff().delay(1) > 5.0  # longer than `shopipe dev`'s Sentinel down-after


def test_a_killed_process_comes_back_as_it_was_started_after_its_backoff(
    table: ProcessTable,
) -> None:
    clock = Clock()
    sup = Supervisor(table, Backoff(initial=2.0, cap=5.0, reset_after=100.0), clock=clock)
    env = {**os.environ, "X": "same-env"}
    first = table.spawn("svc", SHOW, env, umask=0o077)
    assert _runs(table, "svc", 1) == ["run same-env 0o77"]
    assert sup.tick() == []

    _kill(table, "svc")
    assert sup.tick() == []  # found dead: due in 2 s
    rec = table.get("svc")
    assert rec is not None
    assert rec.last_exit == "signal 9 (SIGKILL)"
    assert rec.restart_at > time.time()
    clock.now += 1.9
    assert sup.tick() == []
    clock.now += 0.2
    assert sup.tick() == ["svc"]
    rec = table.get("svc")
    assert rec is not None
    assert rec.pid != first
    assert rec.argv == tuple(SHOW)
    assert (rec.restarts, rec.last_exit) == (1, "signal 9 (SIGKILL)")
    assert _runs(table, "svc", 2) == ["run same-env 0o77"] * 2

    # A second quick failure waits twice as long.
    _kill(table, "svc")
    assert sup.tick() == []
    clock.now += 3.9
    assert sup.tick() == []
    clock.now += 0.2
    assert sup.tick() == ["svc"]

    # A run that lasted reset_after starts the doubling over.
    clock.now += 100.0
    assert sup.tick() == []
    _kill(table, "svc")
    assert sup.tick() == []
    clock.now += 2.1
    assert sup.tick() == ["svc"]
    rec = table.get("svc")
    assert rec is not None
    assert rec.restarts == 3


def test_a_crash_loop_is_capped_and_shows_the_exit_code(table: ProcessTable) -> None:
    clock = Clock()
    sup = Supervisor(table, Backoff(initial=1.0, cap=3.0, reset_after=100.0), clock=clock)
    table.spawn("loop", ["/bin/sh", "-c", "exit 3"])
    delays = []
    for _ in range(4):
        assert table.wait_exit("loop", 10.0)
        assert sup.tick() == []
        rec = table.get("loop")
        assert rec is not None
        assert rec.last_exit == "exit 3"
        delays.append(round(rec.restart_at - time.time()))
        clock.now += 3.0
        assert sup.tick() == ["loop"]
    assert delays == [1, 2, 3, 3]


def test_stopped_held_and_replaced_processes_are_left_alone(
    table: ProcessTable, tmp_path: Path
) -> None:
    clock = Clock()
    sup = Supervisor(table, Backoff(initial=1.0, cap=1.0, reset_after=100.0), clock=clock)
    for name in ("stopped", "stopping", "held", "replaced"):
        table.spawn(name, SHOW)
    assert sup.tick() == []

    table.stop("stopped", timeout=1.0)
    (table.dir / "stopping.stopping").touch()  # a stop in progress in another process
    _kill(table, "stopping")
    other = ProcessTable(tmp_path)  # e.g. the operator restarting a pod
    other.stop("replaced", timeout=1.0)
    other.spawn("replaced", SHOW)
    _kill(other, "replaced")
    with sup.held("held"):
        _kill(table, "held")
        clock.now += 10.0
        assert sup.tick() == []
        clock.now += 10.0
        assert sup.tick() == []
    assert sup.tick() == ["held"]
    assert table.get("stopped") is None
    assert not table.alive("stopping")
    assert not table.alive("replaced")


def test_the_thread_restarts_until_stopped(table: ProcessTable) -> None:
    sup = Supervisor(table, Backoff(initial=0.1, cap=0.1, reset_after=100.0), interval=0.02)
    table.spawn("svc", SHOW)
    assert len(_runs(table, "svc", 1)) == 1
    sup.start()
    try:
        _kill(table, "svc")
        assert len(_runs(table, "svc", 2)) == 2
    finally:
        sup.stop()
    assert not sup.running
