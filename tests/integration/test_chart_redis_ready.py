"""The chart's Redis readiness check (charts/shopipe/files/redis-ready.sh) against real Redis
servers: the suite's master and its replica. Its other decisions (a replica whose link is down)
are tested with stand-ins in tests/unit/chart/test_chart_redis_scripts.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FILES = Path(__file__).resolve().parents[2] / "charts/shopipe/files"


@pytest.mark.parametrize("node", [0, 1], ids=["master", "replica"])
def test_readiness_against_real_redis_a_master_and_a_synced_replica_are_ready(stack, node):
    """files/redis-ready.sh against the suite's real Redis master and its replica (in sync)."""
    info = stack.info
    host, port = info.redis_nodes[node]
    assert host == "127.0.0.1"  # redis-cli's default host, which the script uses
    env = {**os.environ, "REDIS_PASSWORD": info.redis_password, "REDIS_PORT": str(port)}
    deadline = time.monotonic() + 30
    while True:
        proc = subprocess.run(
            ["sh", str(FILES / "redis-ready.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # poll: the replica may still be syncing right after the stack starts
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readiness_against_real_redis_refuses_a_wrong_password(stack):
    info = stack.info
    _host, port = info.redis_nodes[0]
    env = {**os.environ, "REDIS_PASSWORD": "wrong-password-0123456789", "REDIS_PORT": str(port)}
    proc = subprocess.run(
        ["sh", str(FILES / "redis-ready.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
