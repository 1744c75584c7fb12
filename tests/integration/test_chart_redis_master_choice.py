"""Who leads when no Sentinel answers: the functions of charts/shopipe/files/redis-lib.sh that
redis-init.sh uses (redis_survey with the real redis-cli, choose_master), against real Redis
servers configured by redis-init.sh, each on its own loopback address and the same port, as pods
are. The stand-in tests of the same decisions: tests/unit/chart/test_chart_redis_scripts.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.chart_scripts_kit import (
    FILES,
    R,
    free_port,
    link_up,
    local_redis,
    run_script,
    until,
    written,
)

pytestmark = pytest.mark.integration

PASSWORD = "choice-redis-pass-0123456789"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
GONE = "127.0.0.9"  # nothing listens there


def choose(port: int, me: str, hosts: tuple[str, ...]) -> str:
    """What redis-init.sh's survey and decision print, run by /bin/sh with the real redis-cli."""
    if shutil.which("redis-cli") is None:
        pytest.skip("no redis-cli on PATH")
    survey = "; ".join(f"redis_survey {h} {port}" for h in hosts)
    script = f'. "{FILES}/redis-lib.sh"; {{ {survey}; }} | choose_master "{me}"'
    proc = subprocess.run(
        ["sh", "-c", script],
        env={**os.environ, "REDIS_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def failover_accepted(sentinel: redis.Redis) -> bool:
    """SENTINEL FAILOVER, refused (NOGOODSLAVE) until the Sentinel has heard from the replica."""
    try:
        return bool(sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster"))
    except redis.ResponseError as e:
        if "NOGOODSLAVE" in str(e):
            return False
        raise


@pytest.fixture
def conf(tmp_path: Path) -> str:
    return run_script(tmp_path / "init", "redis-init.sh", f"{R}-0", {}, REDIS_PASSWORD=PASSWORD)


def test_a_running_master_is_followed(tmp_path, conf):
    port = free_port(HOSTS)
    with contextlib.ExitStack() as stack:
        stack.enter_context(local_redis(tmp_path / "m", conf, PASSWORD, host=HOSTS[0], port=port))
        replica = stack.enter_context(
            local_redis(tmp_path / "r", conf, PASSWORD, (HOSTS[0], port), host=HOSTS[1], port=port)
        )
        until(lambda: link_up(replica), "replica never synced")
        assert choose(port, HOSTS[2], HOSTS[:2]) == HOSTS[0]


def test_with_the_master_gone_the_most_replicated_replica_leads(tmp_path, conf):
    """A master with two replicas; one falls behind (detached), the master takes more writes and
    dies. Neither pod 0 nor the dead master: the replica with the highest offset."""
    port = free_port(HOSTS)
    with contextlib.ExitStack() as stack, contextlib.ExitStack() as master:
        m = master.enter_context(
            local_redis(tmp_path / "m", conf, PASSWORD, host=HOSTS[0], port=port)
        )
        try:
            ahead, behind = (
                stack.enter_context(
                    local_redis(tmp_path / h, conf, PASSWORD, (HOSTS[0], port), host=h, port=port)
                )
                for h in HOSTS[1:]
            )
            until(lambda: link_up(ahead) and link_up(behind), "replicas never synced")
            until(lambda: written(m, "k", "1"), "the master never counted its replicas")
            assert m.execute_command("WAIT", 2, 5000) == 2
            behind.replicaof(GONE, port)  # detached: its offset stays where it was
            for i in range(100):
                m.set(f"k{i}", "x" * 100)
            assert m.execute_command("WAIT", 1, 5000) == 1
        finally:
            master.close()  # the master dies; its replicas run on
        until(lambda: not link_up(ahead), "the master's death went unnoticed")
        off = [r.info("replication")["master_repl_offset"] for r in (ahead, behind)]
        assert off[0] > off[1]
        # From pod 2's init (or any pod's but the dead master's): the replica that is ahead.
        assert choose(port, "another-pod", HOSTS[1:]) == HOSTS[1]
        # From the dead master's own init: the replica follows it, so it leads again (no loop).
        assert choose(port, HOSTS[0], HOSTS[1:]) == HOSTS[0]


def test_nobody_answering_chooses_nothing(tmp_path):
    """Then redis-init.sh waits (a pod with data) or bootstraps pod 0 (an empty one)."""
    assert choose(free_port(HOSTS), HOSTS[0], HOSTS) == ""


def test_a_sentinel_restarted_alone_monitors_the_master_its_saved_state_names(tmp_path):
    """The state sentinel-init.sh reads back after a full restart is the file a real Sentinel
    rewrote after a real failover: the new master and the epoch survive, not pod 0."""
    port = free_port(HOSTS)
    plain = f'requirepass "{PASSWORD}"\nmasterauth "{PASSWORD}"\n'
    sentinel_conf = "\n".join([
        f'requirepass "{PASSWORD}"', f"sentinel monitor mymaster {HOSTS[0]} {port} 1",
        f'sentinel auth-pass mymaster "{PASSWORD}"',
        "sentinel down-after-milliseconds mymaster 1000",
        "sentinel failover-timeout mymaster 3000",
    ]) + "\n"  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.enter_context(local_redis(tmp_path / "m", plain, PASSWORD, host=HOSTS[0], port=port))
        replica = stack.enter_context(
            local_redis(tmp_path / "r", plain, PASSWORD, (HOSTS[0], port), host=HOSTS[1], port=port)
        )
        until(lambda: link_up(replica), "replica never synced")
        sentinel = stack.enter_context(
            local_redis(tmp_path / "s", sentinel_conf, PASSWORD, host=HOSTS[2], sentinel=True)
        )
        until(lambda: failover_accepted(sentinel), "the Sentinel never took the failover")
        saved = tmp_path / "s" / "redis.conf"
        promoted = f"sentinel monitor mymaster {HOSTS[1]} {port}"
        until(lambda: promoted in saved.read_text(), "the failover was never saved")
        state = saved.read_text()
    init = tmp_path / "init"
    (init / "conf").mkdir(parents=True)
    (init / "conf" / "sentinel.conf").write_text(state)
    # Nobody answers (a full restart): the saved state decides.
    conf = run_script(init, "sentinel-init.sh", "shop-shopipe-sentinel-0", {})
    assert f"sentinel monitor mymaster {HOSTS[1]} 6379 2" in conf
    epochs = [line for line in conf.splitlines() if "epoch" in line]
    assert "sentinel current-epoch 1" in epochs
    assert "sentinel config-epoch mymaster 1" in epochs
