"""What the dev stack writes and hands out: server configs, secrets, the services' env, flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from shopipe.cli import build_parser
from shopipe.config import (
    OperatorSettings,
    ReceiverSettings,
    WorkerSettings,
    known_names,
    load_settings,
)
from shopipe.errors import ConfigError
from shopipe_devstack import StackInfo
from shopipe_devstack.cli import cmd_down, cmd_up
from shopipe_devstack.info import load_secrets
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.redis import RedisNode, shared_config
from shopipe_devstack.seaweed import WeedPorts
from shopipe_devstack.sentinels import Sentinels
from shopipe_devstack.services import service_env
from shopipe_devstack.state import free_ports, read_or_create_secret

pytestmark = pytest.mark.unit


def _info(state_dir: Path) -> StackInfo:
    return StackInfo(
        state_dir=state_dir,
        master_name="mymaster",
        redis_nodes=(("127.0.0.1", 7000), ("127.0.0.1", 7001), ("127.0.0.1", 7002)),
        sentinels=(("127.0.0.1", 26379), ("127.0.0.1", 26380), ("127.0.0.1", 26381)),
        s3_endpoint="http://127.0.0.1:8333",
        s3_bucket="shopipe",
        bind="127.0.0.1",
        weed_ports=WeedPorts(*range(9000, 9008)),
        sentinel_down_after_ms=5000,
        failover_timeout_ms=10000,
        **load_secrets(state_dir),
    )


def test_redis_config_is_production_shaped(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    master = RedisNode(table, 0, ("127.0.0.1", 7000), "pw")
    replica = RedisNode(table, 1, ("127.0.0.1", 7001), "pw", replicaof=("127.0.0.1", 7000))
    m = master.config_text().splitlines()
    r = replica.config_text().splitlines()
    for lines in (m, r):
        for directive in (
            "appendonly yes",
            "appendfsync everysec",
            "requirepass pw",
            "masterauth pw",
            "bind 127.0.0.1",
        ):
            assert directive in lines
    assert "replicaof 127.0.0.1 7000" in r
    assert not any(line.startswith("replicaof") for line in m)
    # The chart's policy first, whole: one source (tests/unit/chart checks the copies agree).
    assert master.config_text().startswith(shared_config())
    assert "min-replicas-to-write 1" in m
    assert "maxmemory-policy noeviction" in m


def test_sentinel_config_monitors_with_quorum_two(tmp_path: Path) -> None:
    s = Sentinels(
        ProcessTable(tmp_path),
        [("127.0.0.1", 26379)],
        ("127.0.0.1", 7000),
        "orders",
        "pw",
        down_after_ms=1000,
        failover_timeout_ms=3000,
    )
    lines = s.config_text(("127.0.0.1", 26379), str(tmp_path)).splitlines()
    for directive in (
        "sentinel monitor orders 127.0.0.1 7000 2",
        "sentinel auth-pass orders pw",
        "sentinel down-after-milliseconds orders 1000",
        "sentinel failover-timeout orders 3000",
        "sentinel parallel-syncs orders 1",
        "port 26379",
    ):
        assert directive in lines


def test_secrets_are_generated_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = read_or_create_secret(tmp_path, "redis_password")
    assert read_or_create_secret(tmp_path, "redis_password") == first
    assert read_or_create_secret(tmp_path, "other") != first
    path = tmp_path / "secrets" / "redis_password"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert len(first) >= 32


@pytest.mark.parametrize(
    ("settings", "env_of"),
    [
        (ReceiverSettings, lambda i: i.receiver_env()),
        (WorkerSettings, lambda i: i.service_env()),
        (OperatorSettings, lambda i: i.service_env()),
    ],
)
def test_service_env_is_accepted_by_the_services_settings(
    tmp_path: Path, settings: type, env_of: object
) -> None:
    info = _info(tmp_path)
    env = env_of(info)  # type: ignore[operator]
    assert set(env) <= known_names()
    loaded: Any = load_settings(settings, env)
    assert loaded.sentinels == ("127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381")
    assert loaded.redis_password.get() == info.redis_password
    assert loaded.s3_secret_key.get() == info.s3_secret_key
    assert loaded.s3_endpoint == info.s3_endpoint


def test_a_spawned_service_gets_the_stack_env_not_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPIPE_S3_BUCKET", "production-bucket")
    info = _info(tmp_path)
    env = service_env(info, "operator", "operator", 9091)
    assert env["SHOPIPE_S3_BUCKET"] == "shopipe"
    assert env["SHOPIPE_HTTP_PORT"] == "9091"
    assert env["SHOPIPE_BACKEND"] == "local"
    load_settings(OperatorSettings, {k: v for k, v in env.items() if k.startswith("SHOPIPE_")})


def test_a_spawned_service_keeps_the_callers_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `SHOPIPE_HANDLERS=myapp.handlers make dev` must reach every worker, also those the
    # operator starts later from its own environment.
    monkeypatch.setenv("SHOPIPE_HANDLERS", "myapp.handlers")
    monkeypatch.setenv("SHOPIPE_MAX_WORKERS", "7")
    info = _info(tmp_path)
    operator = service_env(info, "operator", "operator", 9091)
    assert operator["SHOPIPE_HANDLERS"] == "myapp.handlers"
    assert operator["SHOPIPE_MAX_WORKERS"] == "7"  # the caller's choice beats the dev default
    monkeypatch.setattr(os, "environ", operator)
    worker = service_env(info, "worker", "worker-3", 9092)
    assert worker["SHOPIPE_HANDLERS"] == "myapp.handlers"
    assert worker["SHOPIPE_POD_NAME"] == "worker-3"


def test_info_round_trips_through_the_state_dir_without_secrets(tmp_path: Path) -> None:
    info = _info(tmp_path)
    info.save()
    text = (tmp_path / "stack.json").read_text()
    for secret in (info.redis_password, info.s3_secret_key, info.shopify_secret):
        assert secret not in text
        assert secret not in repr(info)
    assert json.loads(text)["master_name"] == "mymaster"
    assert StackInfo.load(tmp_path) == info
    assert dataclasses.replace(info).service_env() == info.service_env()


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(0 < p < 65536 for p in ports)


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["dev", *argv])


def test_dev_without_subcommand_is_up_and_flags_survive_the_subcommand() -> None:
    assert _parse().func is cmd_up
    args = _parse("--workers", "3", "up", "--show-secrets")
    assert args.func is cmd_up
    assert args.workers == 3
    assert args.show_secrets
    assert _parse("up").workers == 1
    assert _parse("down", "--state-dir", "/x").func is cmd_down
    assert _parse("down", "--state-dir", "/x").state_dir == "/x"


def test_bad_port_list_is_a_config_error(tmp_path: Path) -> None:
    from shopipe_devstack.cli import _ports

    assert _ports("", 2, "--redis-ports") == (0, 0)
    assert _ports("7000,7001", 2, "--redis-ports") == (7000, 7001)
    with pytest.raises(ConfigError, match="--redis-ports"):
        _ports("7000", 2, "--redis-ports")
