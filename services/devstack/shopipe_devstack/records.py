"""The records of the dev stack's processes: one JSON file each under ``<state dir>/procs``,
and the ledger of every spawn (shopipe_devstack.procs keeps them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from shopipe.errors import PermanentError

from shopipe_devstack.pids import exe_name, exe_of, running_since

# Every spawn is also appended here, never removed, so a test suite can prove nothing it
# started survived (processes spawned by other processes through the same table included).
LEDGER = "ledger.jsonl"


class ProcessError(PermanentError):
    """A process of the dev stack could not be started or is unknown."""


@dataclasses.dataclass(frozen=True)
class ProcRecord:
    name: str
    pid: int
    starttime: int  # clock ticks since boot, /proc/<pid>/stat field 22
    argv: tuple[str, ...]
    log: str
    seq: int  # spawn order (ns clock), so stop_all can go in reverse
    exe: str = ""  # /proc/<pid>/exe at spawn
    meta: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. {"port": "8080"}
    # Kept by the supervisor (shopipe_devstack.supervisor), shown by `shopipe dev status`.
    restarts: int = 0
    last_exit: str = ""  # how the previous run ended, e.g. "signal 9 (SIGKILL)"
    restart_at: float = 0.0  # wall clock of the restart due, while the process is down

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProcRecord:
        raw = json.loads(text)
        raw["argv"] = tuple(raw["argv"])
        return cls(**raw)


@dataclasses.dataclass(frozen=True)
class Spec:
    """How a process was started, so the supervisor can start it again exactly so. In memory
    only: the environment holds secrets."""

    pid: int
    argv: tuple[str, ...]
    env: dict[str, str] | None
    cwd: Path | None
    meta: dict[str, str]
    umask: int


def is_ours(rec: ProcRecord) -> bool:
    """True while the process of ``rec`` is alive (not a zombie) and is the one we spawned."""
    if not running_since(rec.pid, rec.starttime):
        return False
    # The start time already pins the process; the executable guards against a table
    # copied between machines or boots. /proc/<pid>/exe is immune to title rewrites.
    if rec.exe and exe_of(rec.pid) == rec.exe:
        return True
    name = exe_name(rec.pid)
    return name in ("", os.path.basename(rec.argv[0]))  # "" while Redis rewrites its title


def ledger_survivors(state_dir: Path) -> list[tuple[str, int]]:
    """(name, pid) of every process ever spawned under ``state_dir`` that is still alive."""
    path = Path(state_dir) / "procs" / LEDGER
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        if running_since(raw["pid"], raw["starttime"]):
            out.append((raw["name"], raw["pid"]))
    return out
