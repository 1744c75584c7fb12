"""`shopipe forward status|enable` as an operator runs them, against the real stack."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from redis import Redis
from shopipe_devstack import Stack
from shopipe_devstack.redis import client
from shopipe_worker.forward import state

from tests.cli_kit import shopipe
from tests.forward_kit import forward_env, write_routes

pytestmark = pytest.mark.integration


def test_status_shows_a_disabled_route_and_enable_brings_it_back(
    stack: Stack, tmp_path: Path
) -> None:
    prefix = f"c{uuid.uuid4().hex[:10]}"
    routes = {
        "app": {"topics": ["orders/*"], "url": "http://127.0.0.1:9/a"},
        "crm": {"topics": ["customers/*"], "url": "http://127.0.0.1:9/c"},
    }
    env = {
        **stack.info.service_env(),
        **forward_env(write_routes(tmp_path / "routes.yaml", routes)),
        "SHOPIPE_KEY_PREFIX": prefix,
        "SHOPIPE_LOG_LEVEL": "warning",
    }
    r: Redis = client(stack.current_master(), stack.info.redis_password, timeout=2.0)
    with r:
        r.set(state.Keys(prefix).disabled("app"), json.dumps({"status": 410, "at": 1.0}))
        got = shopipe("forward", "status", "--json", env=env)
        assert got.returncode == 0, got.stderr
        doc = json.loads(got.stdout)
        assert (doc["app"]["state"], doc["crm"]["state"]) == ("disabled", "enabled")
        assert doc["app"]["disabled"]["status"] == 410
        assert doc["app"]["breaker"] == "closed"
        r.hset(f"{prefix}:fwd:breaker:crm", "failures", 7)  # past the default 5
        got = shopipe("forward", "status", env=env)
        assert "crm                  enabled   breaker open" in got.stdout, got.stdout

        got = shopipe("forward", "enable", "app", env=env)
        assert got.returncode == 0, got.stderr
        assert "enabled again" in got.stdout
        assert r.get(state.Keys(prefix).disabled("app")) is None

        got = shopipe("forward", "enable", "nope", env=env)
        assert got.returncode == 2
        assert "no route 'nope'" in got.stderr
