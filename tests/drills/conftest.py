"""Fixtures of the partition drills: the hosts (once per session) and one stack per drill.

Everything created is removed at the end, also on failure, Ctrl-C (KeyboardInterrupt) and
SIGTERM (turned into KeyboardInterrupt so the same finalisers run); atexit is the last net, and
a run that died harder is cleaned by the next one (``cleanup_leftovers``) or by
``python -m tests.drills.cleanup``.
"""

from __future__ import annotations

import atexit
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.drills.faults import Faults
from tests.drills.hosts import NetStack
from tests.drills.netns import Net, cleanup_leftovers, missing_privilege
from tests.drills.scenario import Drill


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def net() -> Iterator[Net]:
    why = missing_privilege()
    if why:
        pytest.fail(why, pytrace=False)
    cleanup_leftovers()  # namespaces of drill runs that died without cleaning up
    n = Net()
    atexit.register(n.destroy)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        n.create()
        yield n
    finally:
        n.destroy()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def drill(net: Net, stack_dir: Path, request: pytest.FixtureRequest) -> Iterator[Drill]:
    state_dir = stack_dir  # registered for the suite's leak check
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def report(line: str) -> None:
        # Printed past the capture: the figures are the drill's output, pass or fail.
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)

    net.enter("load")  # this thread (and the threads it starts) talk from the load host
    stack = NetStack(state_dir, net)
    faults = Faults(net)
    try:
        stack.start()
        stack.start_pipeline(state_dir / "runs")
        yield Drill(request.node.name.removeprefix("test_"), stack, faults, report)
    finally:
        try:
            faults.heal()
        finally:
            stack.stop()
            net.leave()
