"""Restart what dies, as the kubelet does: same arguments, same data directory, with backoff.

The supervisor watches the processes its ``ProcessTable`` started. One that is gone while its
record remains (a crash, a ``kill -9``) is started again with the argv, environment, working
directory and umask it had, after a delay that doubles with each quick failure up to a cap and
resets once a run lasted ``reset_after`` seconds (the kubelet: 10 s doubling to 5 min, reset
after 10 min; ours are shorter, see ``Backoff``). The restart count and how the last run ended
go into the record, where `shopipe dev status` shows them.

Left alone: a process being stopped on purpose (``ProcessTable.stop`` marks it first), one
whose record was removed, and one another process started or replaced (the workers the operator's
local backend starts are its own: it starts new ones to keep its count).
Redis and Sentinel come back with the config file they rewrote, as a pod does with its volume:
an old master rejoins, and Sentinel makes it a replica of the one it promoted meanwhile.

``Stack(supervise=True)`` runs one in a thread (`shopipe dev` does); the test suite's stacks do
not, so a drill that kills a process finds it still dead until it restarts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from shopipe.backoff import doubling

from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.records import ProcessError, is_ours

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before restarting: ``initial`` doubling per quick failure up to ``cap``; a run
    that lasted ``reset_after`` seconds starts the doubling over.

    The first delay is longer than Sentinel's down-after in `shopipe dev` (5 s), so a killed
    master is replaced by a failover before it returns, as in Kubernetes, where the pod's
    restart takes longer still."""

    initial: float = 10.0
    cap: float = 120.0
    reset_after: float = 120.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th quick failure in a row (1, 2, ...)."""
        return doubling(self.initial, self.cap, failures)


@dataclasses.dataclass
class _Watch:
    started: float  # monotonic time of the current run's start
    failures: int = 0  # quick failures in a row
    due: float | None = None  # monotonic time of the pending restart


class Supervisor:
    """Call ``tick`` (or ``start`` a thread that does) to restart processes that died."""

    def __init__(
        self,
        table: ProcessTable,
        backoff: Backoff | None = None,
        *,
        interval: float = 0.2,
        before_restart: Mapping[str, Callable[[], None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.backoff = backoff or Backoff()
        self.interval = interval
        self.before_restart = dict(before_restart or {})  # e.g. remove stale sockets
        self.clock = clock
        self._watch: dict[str, _Watch] = {}
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the loop ---

    def tick(self) -> list[str]:
        """One look at every process; returns the names restarted."""
        restarted = []
        now = self.clock()
        for rec in self.table.records():
            spec = self.table.spec(rec.name)
            if spec is None or spec.pid != rec.pid or self.table.stopping(rec.name):
                self._watch.pop(rec.name, None)
                continue
            w = self._watch.setdefault(rec.name, _Watch(started=now))
            if is_ours(rec):
                if w.due is not None:  # started again by someone else (Stack.restart_redis)
                    w.due, w.started = None, now
                elif now - w.started >= self.backoff.reset_after:
                    w.failures = 0
                continue
            if w.due is None:  # just found dead
                w.failures = 1 if now - w.started >= self.backoff.reset_after else w.failures + 1
                delay = self.backoff.delay(w.failures)
                w.due = now + delay
                exit_ = self.table.exit_status(rec)
                self.table.update(
                    dataclasses.replace(rec, last_exit=exit_, restart_at=time.time() + delay)
                )
                log.warning("%s exited (%s); restarting in %.1f s", rec.name, exit_, delay)
            if now < w.due or rec.name in self._held:
                continue
            if self._restart(rec.name):
                self._watch[rec.name] = _Watch(started=self.clock(), failures=w.failures)
                restarted.append(rec.name)
        return restarted

    def _restart(self, name: str) -> bool:
        rec, spec = self.table.get(name), self.table.spec(name)
        if rec is None or spec is None or self.table.stopping(name):
            return False
        with contextlib.suppress(Exception):
            self.before_restart.get(name, lambda: None)()
        last_exit = self.table.exit_status(rec)
        if last_exit == "unknown":
            last_exit = rec.last_exit or last_exit
        try:
            self.table.spawn(
                name, spec.argv, spec.env, spec.cwd, spec.meta, umask=spec.umask,
                restarts=rec.restarts + 1, last_exit=last_exit,
            )  # fmt: skip
        except ProcessError as e:
            # Started by someone else meanwhile, or the binary is gone: try again later.
            log.warning("restarting %s failed: %s", name, e)
            return False
        log.warning("%s restarted (restart %d)", name, rec.restarts + 1)
        return True

    # --- the thread ---

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="devstack-supervisor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # one bad look must not end supervision
                log.exception("supervisor tick failed")

    def stop(self) -> None:
        """Stop supervising (before the stack stops its processes); waits for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    # --- for drills ---

    @contextlib.contextmanager
    def held(self, *names: str) -> Iterator[None]:
        """Within the block, ``names`` that die are noted but not restarted: a drill kills the
        master and waits for the failover, then lets the supervisor bring it back."""
        self._held.update(names)
        try:
            yield
        finally:
            self._held.difference_update(names)
