"""Files of the state dir that are not processes: secrets, ports, the summary of the stack."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
from pathlib import Path

from shopipe.errors import PermanentError


class StackError(PermanentError):
    """The dev stack (or one of its components) could not be brought up."""


def secret_file(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "secrets" / name


def read_or_create_secret(state_dir: Path, name: str, nbytes: int = 24) -> str:
    """The secret ``name`` of this state dir, generated once (hex: safe in any config file)."""
    path = secret_file(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_hex(nbytes)
    # Created with 0600 from the start: never world-readable, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


# Given to Redis and Sentinel: their CONFIG REWRITE (Sentinel's on every failover) replaces the
# config file, which holds passwords, with a new one of mode 0644 & ~umask.
PRIVATE_UMASK = 0o077


def write_private(path: Path, text: str) -> None:
    """Write ``path`` with mode 0600, never readable by others, not even for an instant (an
    existing file keeps its mode on open: fchmod before writing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


# Ports are drawn below the kernel's ephemeral range (32768-60999 on Linux). A port the kernel
# hands out for "port 0" comes from that range, where every outgoing connection also takes its
# local port at any moment: a port found free there was often taken by the time a server bound
# it (a worker failed to start with EADDRINUSE in a CI run, four test processes at once). Each
# pytest-xdist worker (or, outside pytest, each process) draws from a slice of its own, and a
# process never hands out a port twice.
_LOW, _HIGH, _SLICES = 20000, 32000, 8
_given: set[int] = set()


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    n = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else os.getpid()
    width = (_HIGH - _LOW) // _SLICES
    start = _LOW + (n % _SLICES) * width
    return range(start, start + width)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free right now on ``host``, none handed out before by this process.

    All sockets stay open until every port is chosen. Another process may still take one before
    our server binds it (a server that fails to bind names its log in the readiness error), but
    not an outgoing connection, nor another test process (see above).
    """
    socks: list[socket.socket] = []
    candidates = [p for p in _slice() if p not in _given]
    random.shuffle(candidates)
    try:
        for port in candidates:  # bounded: one slice
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < n:  # the slice is used up: the kernel's choice, as before
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        _given.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def pick(ports: list[int], wanted: int) -> int:
    """``wanted`` if set (non-zero), else the next free port from ``ports``."""
    return wanted if wanted else ports.pop()


def tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log file, for an error message that should explain itself."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
