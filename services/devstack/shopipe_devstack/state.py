"""Files of the state dir that are not processes: secrets, ports, the summary of the stack."""

from __future__ import annotations

import contextlib
import os
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


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free right now on ``host``.

    All sockets stay open until every port is chosen so the kernel cannot hand out one twice;
    another process may still take one before our server binds it, a race we accept (a server
    that fails to bind names its log in the readiness error).
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
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
