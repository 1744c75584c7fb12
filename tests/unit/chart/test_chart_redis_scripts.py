"""The init scripts of the in-chart Redis pick the right master. They run here under /bin/sh with
stand-ins for `hostname` and `redis-cli` on PATH (the cluster's DNS is out of reach), answering
as the Sentinels and Redis pods of each scenario would."""

from __future__ import annotations

import pytest

from tests.chart_scripts_kit import FILES, RH, SH, R, S, run_raw, run_script

pytestmark = pytest.mark.unit


def sentinel_says(host: str) -> dict[str, str]:
    return {f"sentinel.{S}-{i}.{SH}": f"{host}\n6379\n" for i in range(3)}


def replicaof(conf: str) -> str | None:
    lines = [line.split()[1] for line in conf.splitlines() if line.startswith("replicaof ")]
    assert len(lines) <= 1
    return lines[0] if lines else None


def test_first_start_makes_pod_zero_the_master(tmp_path):
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", {})
    assert replicaof(conf) is None
    assert "appendonly yes" in conf
    assert 'requirepass "redis-pass-0123456789"' in conf
    assert "min-replicas-to-write 1" in conf
    assert "min-replicas-max-lag 10" in conf
    assert f"replica-announce-ip {R}-0.{RH}" in conf


def test_first_start_makes_other_pods_replicas_of_pod_zero(tmp_path):
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-2", {})
    assert replicaof(conf) == f"{R}-0.{RH}"
    assert 'masterauth "redis-pass-0123456789"' in conf


def test_a_restarted_old_master_follows_the_master_the_sentinels_elected(tmp_path):
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", sentinel_says(f"{R}-2.{RH}"))
    assert replicaof(conf) == f"{R}-2.{RH}"


def test_the_elected_master_restarts_as_master(tmp_path):
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-1", sentinel_says(f"{R}-1.{RH}"))
    assert replicaof(conf) is None


def test_min_replicas_settings_come_from_the_values(tmp_path):
    conf = run_script(
        tmp_path, "redis-init.sh", f"{R}-0", {}, MIN_REPLICAS_TO_WRITE="2", MIN_REPLICAS_MAX_LAG="5"
    )
    # After the shared policy's 1 and 10: Redis keeps the last value.
    assert conf.splitlines()[-2:] == ["min-replicas-to-write 2", "min-replicas-max-lag 5"]


def test_a_sentinel_learns_the_master_from_its_peers(tmp_path):
    answers = {f"sentinel.{S}-1.{SH}": f"{R}-2.{RH}\n6379\n", f"role.{R}-0.{RH}": "master\n"}
    conf = run_script(tmp_path, "sentinel-init.sh", f"{S}-0", answers)
    assert f"sentinel monitor mymaster {R}-2.{RH} 6379 2" in conf
    assert "sentinel resolve-hostnames yes" in conf
    assert f"sentinel announce-ip {S}-0.{SH}" in conf
    assert 'sentinel auth-pass mymaster "redis-pass-0123456789"' in conf
    assert 'requirepass "sentinel-pass-0123456789"' in conf


def test_without_peers_a_sentinel_asks_the_redis_pods_for_their_role(tmp_path):
    answers = {f"role.{R}-0.{RH}": "slave\n", f"role.{R}-1.{RH}": "master\n"}
    conf = run_script(tmp_path, "sentinel-init.sh", f"{S}-2", answers)
    assert f"sentinel monitor mymaster {R}-1.{RH} 6379 2" in conf


def test_on_first_start_sentinels_monitor_pod_zero(tmp_path):
    conf = run_script(tmp_path, "sentinel-init.sh", f"{S}-0", {})
    assert f"sentinel monitor mymaster {R}-0.{RH} 6379 2" in conf


def info(role: str, offset: int, master: str = "", link: str = "up") -> str:
    lines = [f"# Replication\r\nrole:{role}\r\n"]
    if role == "slave":
        lines.append(f"master_host:{master}\r\nmaster_port:6379\r\nmaster_link_status:{link}\r\n")
    lines.append(f"master_repl_offset:{offset}\r\n")
    return "".join(lines)


def pod(i: int) -> str:
    return f"{R}-{i}.{RH}"


def test_without_sentinels_a_restarting_pod_follows_the_running_master(tmp_path):
    answers = {f"info.{pod(1)}": info("slave", 90, pod(2)), f"info.{pod(2)}": info("master", 100)}
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", answers)
    assert replicaof(conf) == pod(2)


def test_without_sentinels_pod_zero_follows_the_master_the_replicas_follow_not_itself(tmp_path):
    """A full restart of the Sentinels while the master pod is unreachable: pod 0 (perhaps a
    lagging replica) must not make itself master; it follows the master the running replica
    follows."""
    answers = {f"info.{pod(1)}": info("slave", 500, pod(2))}
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", answers)
    assert replicaof(conf) == pod(2)


def test_without_sentinels_the_most_replicated_view_wins(tmp_path):
    """Two running replicas disagree (one still follows a stale master): the one that
    replicated most is right."""
    answers = {
        f"info.{pod(0)}": info("slave", 40, pod(3)),
        f"info.{pod(1)}": info("slave", 900, pod(2)),
    }
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-3", answers, REDIS_REPLICAS="4")
    assert replicaof(conf) == pod(2)


def test_sentinel_myid_is_the_same_on_every_start_and_differs_per_pod(tmp_path):
    def myid(me: str, sub: str) -> str:
        conf = run_script(tmp_path / sub, "sentinel-init.sh", me, {})
        (line,) = [x for x in conf.splitlines() if x.startswith("sentinel myid ")]
        return line.split()[2]

    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    first, again, other = myid(f"{S}-0", "a"), myid(f"{S}-0", "b"), myid(f"{S}-1", "c")
    assert first == again != other
    assert len(first) == 40
    assert all(c in "0123456789abcdef" for c in first)


def test_prestop_of_the_master_fails_over_and_waits_until_it_is_a_replica(tmp_path):
    answers = {"role.local": "master\n", f"failover.{S}-1.{SH}": ""}
    proc = run_raw(tmp_path, "redis-prestop.sh", f"{R}-0", answers, PRESTOP_WAIT_SECONDS="5")
    assert proc.returncode == 0, proc.stderr
    assert "failed over" in proc.stdout
    # Sentinel 0 refused (no file): the hook asked the next one.
    assert (tmp_path / "fake" / "asked").read_text().split() == [f"{S}-1.{SH}"]


def test_prestop_of_a_replica_asks_for_no_failover(tmp_path):
    answers = {"role.local": "slave\n", f"failover.{S}-0.{SH}": ""}
    proc = run_raw(tmp_path, "redis-prestop.sh", f"{R}-1", answers)
    assert proc.returncode == 0
    assert not (tmp_path / "fake" / "asked").exists()


@pytest.mark.parametrize(
    ("replication", "ready"),
    [
        (info("master", 10), True),
        (info("slave", 10, pod(0), link="up"), True),
        (info("slave", 0, pod(0), link="down"), False),
        (None, False),
    ],
)
def test_a_replica_is_ready_only_in_sync_with_its_master(tmp_path, replication, ready):
    answers = {} if replication is None else {"info.local": replication}
    proc = run_raw(tmp_path, "redis-ready.sh", f"{R}-1", answers)
    assert (proc.returncode == 0) is ready, proc.stdout + proc.stderr


def test_the_redis_pods_run_the_hook_and_the_readiness_check(matrix, chart):
    sts = chart.one(matrix["inchart-redis-values.yaml"], "StatefulSet", "-redis")
    spec = sts["spec"]["template"]["spec"]
    (redis,) = [c for c in spec["containers"] if c["name"] == "redis"]
    assert redis["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "/scripts/redis-prestop.sh"]
    assert redis["readinessProbe"]["exec"]["command"] == ["sh", "/scripts/redis-ready.sh"]
    wait = next(e["value"] for e in redis["env"] if e["name"] == "PRESTOP_WAIT_SECONDS")
    assert int(wait) < spec["terminationGracePeriodSeconds"]


def test_the_chart_ships_these_very_scripts(matrix, chart):
    cm = chart.one(matrix["inchart-redis-values.yaml"], "ConfigMap", "-redis-scripts")
    names = (
        "redis-lib.sh",
        "redis-init.sh",
        "sentinel-init.sh",
        "redis-ready.sh",
        "redis-prestop.sh",
    )
    for name in names:
        assert cm["data"][name].strip() == (FILES / name).read_text().strip()


DEVSTACK_CONF = FILES.parents[2] / "services/devstack/shopipe_devstack/redis.conf"


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_dev_stack_runs_the_charts_redis_policy():
    # One source, two copies: the dev stack's is package data (an installed `shopipe dev` has no
    # chart beside it), so the copies must stay the same bytes.
    assert DEVSTACK_CONF.read_bytes() == (FILES / "redis.conf").read_bytes()
    assert {
        "appendonly yes", "appendfsync everysec", 'save ""', "min-replicas-to-write 1",
        "min-replicas-max-lag 10", "maxmemory-policy noeviction",
    } <= set(directives(DEVSTACK_CONF.read_text()))  # fmt: skip


def test_each_pods_redis_conf_starts_with_the_shared_policy(tmp_path):
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", {})
    assert conf.startswith((FILES / "redis.conf").read_text())
    assert "maxmemory 768mb" in directives(conf)


def test_an_override_from_the_values_comes_after_the_policy(tmp_path):
    conf = directives(run_script(tmp_path, "redis-init.sh", f"{R}-0", {}, MAXMEMORY="3gb"))
    # Redis keeps the last value of a directive.
    assert conf.index("maxmemory 3gb") > conf.index("maxmemory 768mb")


def test_the_chart_ships_the_shared_policy(matrix, chart):
    cm = chart.one(matrix["inchart-redis-values.yaml"], "ConfigMap", "-redis-scripts")
    assert cm["data"]["redis.conf"].strip() == (FILES / "redis.conf").read_text().strip()


def test_while_rotating_redis_accepts_both_passwords_and_uses_the_first(tmp_path):
    conf = run_script(
        tmp_path, "redis-init.sh", f"{R}-1", {}, REDIS_EXTRA_PASSWORD="redis-next-0123456789"
    )
    assert 'user default on ">redis-pass-0123456789" ">redis-next-0123456789" ~* &* +@all' in conf
    assert "requirepass" not in conf  # it would hold only one of them
    assert 'masterauth "redis-pass-0123456789"' in conf


def test_while_rotating_sentinels_accept_both_passwords_and_use_the_first(tmp_path):
    conf = run_script(
        tmp_path, "sentinel-init.sh", f"{S}-1", {}, SENTINEL_EXTRA_PASSWORD="sent-next-0123456789"
    )
    both = 'user default on ">sentinel-pass-0123456789" ">sent-next-0123456789" ~* &* +@all'
    assert both in conf
    assert "requirepass" not in conf
    assert 'sentinel sentinel-pass "sentinel-pass-0123456789"' in conf
    assert 'sentinel auth-pass mymaster "redis-pass-0123456789"' in conf


def test_without_sentinels_a_running_master_wins_over_any_replica(tmp_path):
    answers = {
        f"info.{pod(0)}": info("slave", 900, pod(1), link="down"),
        f"info.{pod(1)}": info("master", 100),
    }
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-2", answers)
    assert replicaof(conf) == pod(1)


def test_without_sentinels_and_master_the_replica_with_the_highest_offset_is_chosen(tmp_path):
    """The master is gone (its replicas' links are down): not pod 0, and not the dead master,
    but the replica that replicated most."""
    answers = {
        f"info.{pod(1)}": info("slave", 700, pod(2), link="down"),
        f"info.{pod(3)}": info("slave", 900, pod(2), link="down"),
    }
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", answers, REDIS_REPLICAS="4")
    assert replicaof(conf) == pod(3)


def test_the_restarting_master_its_replicas_still_point_at_leads_again(tmp_path):
    """Following the replica that follows this pod would make a loop: this pod leads."""
    answers = {f"info.{pod(1)}": info("slave", 900, pod(0), link="down")}
    conf = run_script(tmp_path, "redis-init.sh", f"{R}-0", answers)
    assert replicaof(conf) is None


def test_a_pod_with_data_waits_for_the_sentinels_before_making_pod_zero_master(tmp_path):
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    proc = run_raw(tmp_path, "redis-init.sh", f"{R}-0", {}, DATA_DIR=str(data),
                   BOOT_WAIT_SECONDS="1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "this pod has data, so it waits for the Sentinels" in proc.stdout
    assert "bootstrap master" in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_raw(tmp_path, "redis-init.sh", f"{R}-0", {}, DATA_DIR=str(empty))
    assert "waits" not in proc.stdout  # a first start leads at once


SAVED_STATE = f"""port 26379
sentinel myid 0123456789012345678901234567890123456789
requirepass "an-old-sentinel-password"
sentinel monitor mymaster {R}-2.{RH} 6379 2
sentinel config-epoch mymaster 7
sentinel leader-epoch mymaster 7
sentinel current-epoch 7
sentinel known-replica mymaster {R}-0.{RH} 6379
"""


def test_after_a_full_restart_a_sentinel_monitors_the_master_of_its_saved_state(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "sentinel.conf").write_text(SAVED_STATE)
    conf = run_script(tmp_path, "sentinel-init.sh", f"{S}-0", {})
    assert f"sentinel monitor mymaster {R}-2.{RH} 6379 2" in conf
    for line in ("sentinel config-epoch mymaster 7", "sentinel leader-epoch mymaster 7",
                 "sentinel current-epoch 7"):  # fmt: skip
        assert line in conf.splitlines()
    # The passwords and the rest are today's: only the master and the epochs are carried over.
    assert "an-old-sentinel-password" not in conf
    assert 'requirepass "sentinel-pass-0123456789"' in conf
    assert conf.count("sentinel monitor") == 1


def test_running_peers_and_redis_pods_know_better_than_the_saved_state(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "sentinel.conf").write_text(SAVED_STATE)
    conf = run_script(tmp_path, "sentinel-init.sh", f"{S}-0", {f"role.{pod(1)}": "master\n"})
    assert f"sentinel monitor mymaster {pod(1)} 6379 2" in conf
    assert "sentinel current-epoch 7" in conf.splitlines()
