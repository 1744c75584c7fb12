"""Rotating the Redis password without downtime (docs/operations.md), against real Redis
servers configured by the chart's own redis-init.sh at each step of the sequence. While a step
rolls out, pods of the step before and after run side by side: a replica of either side syncs
from a master of the other, and clients with either side's password are served by both."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.chart_scripts_kit import R, link_up, local_redis, run_script, until, written

pytestmark = pytest.mark.integration

OLD = "old-redis-pass-0123456789"
NEW = "new-redis-pass-0123456789"
# (redisPassword, redisExtraPassword) of each `helm upgrade` in the documented sequence.
STEPS = [(OLD, ""), (OLD, NEW), (NEW, OLD), (NEW, "")]


def conf_at(tmp_path: Path, step: int, pod: int) -> str:
    password, extra = STEPS[step]
    return run_script(
        tmp_path / f"init-{step}-{pod}",
        "redis-init.sh",
        f"{R}-{pod}",
        {},
        REDIS_PASSWORD=password,
        REDIS_EXTRA_PASSWORD=extra,
    )


def port_of(client: redis.Redis) -> int:
    port: int = client.connection_pool.connection_kwargs["port"]
    return port


def wait_in_sync(replica: redis.Redis) -> None:
    """Poll until the link is up; a refused masterauth never gets there and fails here."""
    until(lambda: link_up(replica), "the replica never synced with its master")


def accepts(client: redis.Redis, password: str) -> bool:
    port = port_of(client)
    with redis.Redis(port=port, password=password, socket_timeout=2) as other:
        try:
            return bool(other.ping())
        except redis.AuthenticationError:
            return False


@pytest.mark.parametrize("step", [0, 1, 2], ids=["add-next", "swap", "drop-old"])
@pytest.mark.parametrize("master_side", ["before", "after"])
def test_pods_of_adjacent_steps_replicate_and_serve_both_sides(tmp_path, step, master_side):
    m_step, r_step = (step, step + 1) if master_side == "before" else (step + 1, step)
    with local_redis(tmp_path / "m", conf_at(tmp_path, m_step, 0), STEPS[m_step][0]) as master:
        replica_conf = conf_at(tmp_path, r_step, 1)
        with local_redis(
            tmp_path / "r", replica_conf, STEPS[r_step][0], replicaof=port_of(master)
        ) as replica:
            wait_in_sync(replica)
            # min-replicas-to-write 1 (the chart's policy): the master counts the replica once
            # its first acknowledgement arrived, a moment after the link is up.
            until(lambda: written(master, "rotation", str(step)), "the master never counted it")
            master.wait(1, 5000)
            assert replica.get("rotation") == str(step)
            # Clients of both steps (apps roll at the same time) are served by both servers.
            for server in (master, replica):
                for password in (STEPS[step][0], STEPS[step + 1][0]):
                    assert accepts(server, password)


def test_after_the_last_step_the_old_password_is_refused(tmp_path):
    with local_redis(tmp_path / "m", conf_at(tmp_path, 3, 0), NEW) as server:
        assert accepts(server, NEW)
        assert not accepts(server, OLD)


def test_changing_the_password_in_one_step_locks_the_rolled_pods_out(tmp_path):
    """Why three steps: a pod on the new password alone and one still on the old one
    refuse each other."""
    with local_redis(tmp_path / "m", conf_at(tmp_path, 0, 0), OLD) as old_master:
        assert not accepts(old_master, NEW)
