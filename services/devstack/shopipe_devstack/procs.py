"""The dev stack's process table: one JSON file per process under ``<state dir>/procs``.

Files, not memory, so that another process given the same state dir (``shopipe dev down``, the
operator's local backend) can list, start and stop the same processes, and so that a second
``shopipe dev`` after a crash finds what the first one left running. A pid is trusted only if
the process still has the start time recorded at spawn and the same executable name: pids are
reused, and killing a stranger's process would be worse than leaking ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal as _sig
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from shopipe_devstack.pids import describe_exit, enter_netns, exe_of, stat_of
from shopipe_devstack.records import LEDGER, ProcessError, ProcRecord, Spec, is_ours


class ProcessTable:
    """Spawn, list and stop named processes whose state lives in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.dir = self.state_dir / "procs"
        self.log_dir = self.state_dir / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Children of this process, so that their exit status is collected (no zombies).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exits: dict[int, int] = {}  # pid -> return code of children reaped
        self._specs: dict[str, Spec] = {}  # name -> how this table last started it
        # The supervisor's thread spawns and reaps too.
        self._lock = threading.RLock()

    def _file(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ProcessError(f"bad process name {name!r}")
        return self.dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def get(self, name: str) -> ProcRecord | None:
        # Collect children another process may have stopped, so none stays a zombie.
        self._reap_children()
        try:
            return ProcRecord.from_json(self._file(name).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a torn file from a crash: treat as absent

    def records(self) -> list[ProcRecord]:
        self._reap_children()
        out = []
        for path in self.dir.glob("*.json"):
            rec = self.get(path.stem)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.seq)

    def _reap_children(self) -> None:
        with self._lock:
            for pid, child in list(self._children.items()):
                code = child.poll()
                if code is not None:
                    del self._children[pid]
                    self._exits[pid] = code

    def exit_status(self, rec: ProcRecord) -> str:
        """How the process of ``rec`` ended, if this table started it and it has."""
        self._reap_children()
        with self._lock:
            return describe_exit(self._exits.get(rec.pid))

    def spec(self, name: str) -> Spec | None:
        """How this table started ``name``, if it did (a process other tables start is
        theirs to restart)."""
        with self._lock:
            return self._specs.get(name)

    def stopping(self, name: str) -> bool:
        """True while someone stops ``name`` on purpose: the supervisor leaves it alone."""
        return self._stop_mark(name).exists()

    def _stop_mark(self, name: str) -> Path:
        return self._file(name).with_suffix(".stopping")

    def alive(self, name: str) -> bool:
        self._reap_children()
        rec = self.get(name)
        return rec is not None and is_ours(rec)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        meta: Mapping[str, str] | None = None,
        *,
        umask: int = -1,
        restarts: int = 0,
        last_exit: str = "",
        netns: str | None = None,
    ) -> int:
        """Start ``argv`` in its own session, output appended to logs/<name>.log; return pid.
        ``umask`` (-1: ours) is the child's; ``restarts`` and ``last_exit`` are the
        supervisor's, kept in the record. ``netns``: run it in that named network namespace
        (the partition drills' hosts, which run unsupervised)."""
        with self._lock:
            return self._spawn(name, argv, env, cwd, meta, umask, restarts, last_exit, netns)

    def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: Path | None,
        meta: Mapping[str, str] | None,
        umask: int,
        restarts: int,
        last_exit: str,
        netns: str | None,
    ) -> int:
        if self.alive(name):
            raise ProcessError(f"process {name} is already running")
        self._stop_mark(name).unlink(missing_ok=True)  # left by a stop that was cut off
        log_path = self.log_path(name)
        with open(log_path, "ab") as log:
            log.write(f"--- shopipe dev: starting {name} at {time.ctime()} ---\n".encode())
            log.flush()
            try:
                child = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,  # own process group: stop kills its children too
                    close_fds=True,
                    umask=umask,
                    preexec_fn=(lambda: enter_netns(netns)) if netns else None,
                )
            except OSError as e:
                raise ProcessError(f"cannot start {name}: {e.strerror} ({argv[0]})") from e
        self._children[child.pid] = child
        st = stat_of(child.pid)
        rec = ProcRecord(
            name=name,
            pid=child.pid,
            starttime=st[1] if st else -1,
            exe=exe_of(child.pid),
            meta=dict(meta or {}),
            argv=tuple(argv),
            log=str(log_path),
            seq=time.monotonic_ns(),
            restarts=restarts,
            last_exit=last_exit,
        )
        self._write(rec)
        self._specs[name] = Spec(
            child.pid, tuple(argv), dict(env) if env is not None else None, cwd,
            dict(meta or {}), umask,
        )  # fmt: skip
        with open(self.dir / LEDGER, "a") as ledger:
            ledger.write(json.dumps({"name": name, "pid": rec.pid, "starttime": rec.starttime}))
            ledger.write("\n")
        return child.pid

    def update(self, rec: ProcRecord) -> None:
        """Rewrite the record of a process (the supervisor's fields), if it is still the
        current one: a stop or a new spawn meanwhile wins."""
        with self._lock:
            now = self.get(rec.name)
            if now is not None and now.pid == rec.pid and not self.stopping(rec.name):
                self._write(rec)

    def _write(self, rec: ProcRecord) -> None:
        path = self._file(rec.name)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(rec.to_json())
        os.replace(tmp, path)  # atomic: a reader never sees half a record

    def signal(self, name: str, sig: int) -> bool:
        """Send ``sig`` to the process (not its group); False when it is not running."""
        rec = self.get(name)
        if rec is None or not is_ours(rec):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, sig)
        return True

    def wait_exit(self, name: str, timeout: float) -> bool:
        """Poll until the process is gone; True if it exited within ``timeout`` seconds."""
        rec = self.get(name)
        if rec is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            self._reap_children()
            # Our own child counts as gone only once reaped: a multi-threaded leader shows
            # as a zombie while its other threads are still exiting.
            if rec.pid not in self._children and not is_ours(rec):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self, name: str, timeout: float = 5.0, sig: int = _sig.SIGTERM) -> None:
        """Stop the process group of ``name``: ``sig``, then SIGKILL after ``timeout``."""
        rec = self.get(name)
        if rec is None:
            return
        mark = self._stop_mark(name)
        mark.touch()  # before the signal: its exit is not a crash to restart from
        if is_ours(rec):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec.pid, sig)
            if not self.wait_exit(name, timeout):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(rec.pid, _sig.SIGKILL)
                if not self.wait_exit(name, 5.0):
                    raise ProcessError(f"process {name} (pid {rec.pid}) survived SIGKILL")
        else:
            # Its leader is gone, yet children it forked may live on in its group.
            self._kill_orphan_group(rec)
        self._reap_children()
        with contextlib.suppress(FileNotFoundError):
            self._file(name).unlink()
        mark.unlink(missing_ok=True)

    def stop_many(self, names: Sequence[str], timeout: float = 5.0) -> None:
        """Stop several processes at once (SIGTERM to all, one shared deadline, then
        SIGKILL): pipeline processes drain in parallel instead of one after the other."""
        live = []
        for name in names:
            rec = self.get(name)
            if rec is not None and is_ours(rec):
                self._stop_mark(name).touch()
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(rec.pid, _sig.SIGTERM)
                live.append(name)
        deadline = time.monotonic() + timeout
        for name in live:
            self.wait_exit(name, max(0.0, deadline - time.monotonic()))
        for name in names:
            self.stop(name, 0.0)  # SIGKILL what is left; drop the records

    def _kill_orphan_group(self, rec: ProcRecord) -> None:
        if stat_of(rec.pid) is not None:
            return  # the pid was reused by a stranger: its group is not ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, _sig.SIGKILL)

    def stop_all(self, timeout: float = 5.0, timeouts: Mapping[str, float] | None = None) -> None:
        """Stop every process, last started first; also clears records of dead ones."""
        for rec in reversed(self.records()):
            self.stop(rec.name, (timeouts or {}).get(rec.name, timeout))

    def forget(self, name: str) -> None:
        """Drop the record of a process that is known to be gone."""
        with contextlib.suppress(FileNotFoundError):
            self._file(name).unlink()
