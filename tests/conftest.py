"""Suite-wide fixtures: the real local stack (the same one `shopipe dev` runs).

- ``stack``: one per session, shared, for tests that do not break it.
- ``make_stack``: a private stack per call, for drills (kill the master, stop S3).
Both use short Sentinel timings so failovers take seconds. At the end of the session no process
the suite started may still be alive: every stack's spawn ledger is checked, and so is every
process carrying this session's environment marker. Under pytest-xdist (`make test`) each worker
is a session of its own, with its own stacks and marker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shopipe_devstack import Stack
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.records import ledger_survivors

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000

# Inherited by every process the suite starts (unless a test passes its own env), so that a
# process started outside any process table is still found at the end. Not SHOPIPE_*: those
# names are validated by shopipe.config.
MARKER = "PYTEST_SHOPIPE_SESSION"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker is a session of its own: with the controller's marker inherited, one
    # worker's end-of-session check would find (and kill) the stacks its siblings still run.
    os.environ[MARKER] = uuid.uuid4().hex
else:
    os.environ.setdefault(MARKER, uuid.uuid4().hex)

# In CI every server the suite needs is installed by .ci/run: a skip there hides a broken
# install step, so it fails instead.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_STATE_DIRS: list[Path] = []


def register_state_dir(path: Path) -> None:
    """Tests that build a Stack or ProcessTable themselves register its dir for the leak check."""
    _STATE_DIRS.append(Path(path))


def _marked_processes() -> list[tuple[int, str]]:
    me = os.getpid()
    token = f"{MARKER}={os.environ[MARKER]}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if token not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append((int(entry.name), cmd.strip()[:120]))
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """Set up first, so torn down last: after every stack fixture has stopped."""
    yield
    leaked = [f"{name} (pid {pid}) from {d}" for d in _STATE_DIRS for name, pid in
              ledger_survivors(d)]  # fmt: skip
    leaked += [f"pid {pid}: {cmd}" for pid, cmd in _marked_processes()]
    # Kill what leaked, so one failure does not cascade into the next run.
    for pid, _cmd in _marked_processes():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for d in _STATE_DIRS:
        for _name, pid in ledger_survivors(d):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    if leaked:
        pytest.fail("processes left running by the suite:\n  " + "\n  ".join(sorted(set(leaked))))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be missing: {report.longrepr}"
    return report


def _new_stack(tmp_path_factory: pytest.TempPathFactory, **kwargs: Any) -> Stack:
    kwargs.setdefault("sentinel_down_after_ms", DOWN_AFTER_MS)
    kwargs.setdefault("failover_timeout_ms", FAILOVER_TIMEOUT_MS)
    state_dir = tmp_path_factory.mktemp("stack")
    register_state_dir(state_dir)
    return Stack(state_dir, **kwargs)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack. Do not kill or reconfigure it: use ``make_stack`` for that."""
    s = _new_stack(tmp_path_factory)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """``make_stack(**Stack kwargs) -> started Stack``, stopped at the end of the test."""
    made: list[Stack] = []

    def factory(**kwargs: Any) -> Stack:
        s = _new_stack(tmp_path_factory, **kwargs)
        made.append(s)
        s.start()
        return s

    try:
        yield factory
    finally:
        for s in reversed(made):
            s.stop()


@pytest.fixture
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh state dir registered for the leak check; whatever its table still runs at the
    end of the test is stopped (a safety net, not a substitute for stopping it)."""
    state_dir = tmp_path_factory.mktemp("stack")
    register_state_dir(state_dir)
    yield state_dir
    ProcessTable(state_dir).stop_all(timeout=1.0)
