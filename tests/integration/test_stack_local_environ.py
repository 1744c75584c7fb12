"""One-shot commands (`shopipe backlog`, `shopipe dlq`) find the dev stack with nothing set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from shopipe.devstack import Stack
from shopipe.devstack.info import local_environ

pytestmark = pytest.mark.integration


def test_environment_is_completed_from_the_stack_only_when_it_names_no_bucket(stack: Stack):
    state = str(stack.info.state_dir)
    filled = local_environ({"SHOPIPE_STATE_DIR": state})
    assert filled["SHOPIPE_S3_BUCKET"] == stack.info.s3_bucket
    assert filled["SHOPIPE_SENTINELS"] == stack.info.service_env()["SHOPIPE_SENTINELS"]
    configured = {"SHOPIPE_STATE_DIR": state, "SHOPIPE_S3_BUCKET": "prod-bucket"}
    assert local_environ(configured) == configured


def test_no_stack_leaves_the_environment_alone(tmp_path):
    env = {"SHOPIPE_STATE_DIR": str(tmp_path)}
    assert local_environ(env) == env


def test_backlog_runs_beside_the_dev_stack_with_no_settings(stack: Stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
    env["SHOPIPE_STATE_DIR"] = str(stack.info.state_dir)
    out = subprocess.run(
        [sys.executable, "-m", "shopipe", "backlog"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "incoming objects" in out.stdout
