"""What the Stack knows about one of its parts: start it, wait for it for real, stop it.

The stack is a list of components, so adding one (Prometheus, say) is one class and one line
in ``Stack.components``; ``start`` and ``stop`` stay as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.state import StackError

POLL_SECONDS = 0.05


class Component:
    """Base class. ``blocking``: later components need this one ready before they start."""

    name = "component"
    blocking = False
    ready_timeout = 30.0

    def __init__(self, table: ProcessTable) -> None:
        self.table = table

    def process_names(self) -> list[str]:
        return [self.name]

    def start(self) -> None:
        raise NotImplementedError

    def check(self) -> str | None:
        """One readiness probe: None when ready, else why not (no secrets in it)."""
        raise NotImplementedError

    def stop_timeout(self) -> float:
        return 5.0

    def before_restart(self, proc: str) -> None:
        """Called by the supervisor before it starts ``proc`` again after it died."""

    def stop(self) -> None:
        for name in reversed(self.process_names()):
            self.table.stop(name, self.stop_timeout())

    def log_of(self, proc: str | None = None) -> Path:
        return self.table.log_path(proc or self.process_names()[0])

    def wait_ready(self, deadline: float) -> None:
        """Poll ``check`` until it passes; on timeout or a dead process, raise a StackError
        that names the component and its log file."""
        wait_until(self.name, self.check, deadline, self._dead_process, self.log_of)

    def _dead_process(self) -> str | None:
        for name in self.process_names():
            if not self.table.alive(name):
                return name
        return None


def wait_until(
    what: str,
    check: Callable[[], str | None],
    deadline: float,
    dead: Callable[[], str | None] | None = None,
    log_of: Callable[[str | None], Path] | None = None,
) -> None:
    reason = "not checked yet"
    while True:
        gone = dead() if dead else None
        if gone is not None:
            log = f"; log: {log_of(gone)}" if log_of else ""
            raise StackError(f"{what}: process {gone} exited during start{log}")
        reason = check() or ""
        if not reason:
            return
        if time.monotonic() >= deadline:
            log = f"; log: {log_of(None)}" if log_of else ""
            raise StackError(f"{what} did not become ready: {reason}{log}")
        time.sleep(POLL_SECONDS)
