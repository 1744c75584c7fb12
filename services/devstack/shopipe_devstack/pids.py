"""What the kernel says of a process: alive or not, since when, running what, how it ended.

A pid alone proves nothing (pids are reused): the dev stack trusts one only with the start
time it recorded at spawn (``/proc/<pid>/stat``), and the executable it ran. Also: moving a
child into a network namespace before it execs (the partition drills' hosts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal as _sig
from pathlib import Path


def describe_exit(code: int | None) -> str:
    """A Popen return code in words: "exit 3", "signal 9 (SIGKILL)", or "unknown"."""
    if code is None:
        return "unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {-code} ({_sig.Signals(-code).name})"
        return f"signal {-code}"
    return f"exit {code}"


def stat_of(pid: int) -> tuple[str, int] | None:
    """(state, starttime) of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def running_since(pid: int, starttime: int) -> bool:
    """True while ``pid`` is alive (not a zombie) and is the process started at ``starttime``."""
    st = stat_of(pid)
    return st is not None and st[0] not in ("Z", "X") and st[1] == starttime


def exe_name(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    # Redis rewrites its title ("valkey-server 127.0.0.1:6379"): compare the first word only.
    first = raw.split(b"\0", 1)[0].split(b" ", 1)[0]
    return os.path.basename(first.decode(errors="replace"))


def exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread into the network namespace ``/run/netns/<name>`` (needs
    CAP_NET_ADMIN). Python 3.11 has no os.setns; libc's is the same call."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)
