"""`shopipe receiver` serves as a process; `shopipe send` signs, sends and summarises."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from shopipe_devstack import Stack, services
from shopipe_devstack.state import free_ports

pytestmark = pytest.mark.integration

SECRET = "cli-secret"


def wait_healthy(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, "receiver exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("receiver did not become healthy")
        time.sleep(0.05)


def start_receiver(stack: Stack, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
    env.update(stack.info.receiver_env())
    env.update(
        {
            "SHOPIPE_SHOPIFY_SECRETS": SECRET,
            "SHOPIPE_HTTP_HOST": "127.0.0.1",
            "SHOPIPE_HTTP_PORT": str(port),
            "SHOPIPE_STREAM": f"test:{uuid.uuid4().hex}",
            **extra,
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "shopipe", "receiver"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then the process's stderr (killed after a deadline)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


def test_receiver_process_accepts_what_send_sends_and_stops_on_sigterm(stack: Stack) -> None:
    port = free_ports(1)[0]
    proc = start_receiver(stack, port)
    try:
        wait_healthy(port, proc)
        sent = subprocess.run(
            [
                sys.executable, "-m", "shopipe", "send", "orders/create", "--count", "40",
                "--concurrency", "8", "--secret", SECRET,
                "--url", f"http://127.0.0.1:{port}/webhooks/shopify",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "200 x 40" in sent.stdout
        assert "p99" in sent.stdout
        # Not a terminal (a log, CI): no progress bar, so no \r frames, though not --quiet.
        assert "\r" not in sent.stdout + sent.stderr
        wrong = subprocess.run(
            [
                sys.executable, "-m", "shopipe", "send", "shop/redact", "--quiet",
                "--secret", "wrong", "--url", f"http://127.0.0.1:{port}/webhooks/shopify",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert wrong.returncode == 1
        assert "401 x 1" in wrong.stdout
    finally:
        text = stop(proc)
    # A graceful stop on SIGTERM is a clean exit, not a death by signal.
    assert proc.returncode == 0
    assert "every open segment written" in text
    assert SECRET not in text
    assert '"outcome":"accepted"' in text  # JSON access lines


def _dev_env(state_dir: Path) -> dict[str, str]:
    """What `eval "$(shopipe dev env)"` sets: the shell's environment, its SHOPIPE_* replaced."""
    out = subprocess.run(
        [sys.executable, "-m", "shopipe", "dev", "env", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
    for line in out.splitlines():
        name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        env[name] = value
    return env


def test_send_and_backlog_beside_the_dev_stack_take_their_settings_from_dev_env(
    stack: Stack,
) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
    alone = subprocess.run(
        [sys.executable, "-m", "shopipe", "send", "orders/create", "--quiet"],
        capture_output=True, text=True, timeout=60, env=bare, cwd=stack.info.state_dir.parent,
        check=False,
    )  # fmt: skip
    # The CLI never reads the stack's files: with nothing set it says what to set.
    assert alone.returncode == 2
    assert "shopipe dev env" in alone.stderr
    tag = uuid.uuid4().hex
    stream = {"SHOPIPE_STREAM": f"test:{tag}"}  # the shared stack's stream stays untouched
    receiver = services.spawn_service(
        stack.table, stack.info, "receiver", f"receiver-{tag}", extra_env=stream
    )
    try:
        services.wait_healthy(stack.table, receiver, stack.info.bind)
        env = {**_dev_env(stack.info.state_dir), **stream}
        assert env["SHOPIPE_WEBHOOK_URL"] == receiver.url(stack.info.bind, "/webhooks/shopify")
        sent = subprocess.run(
            [sys.executable, "-m", "shopipe", "send", "orders/create", "--count", "3", "--quiet"],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "200 x 3" in sent.stdout
        backlog = subprocess.run(
            [sys.executable, "-m", "shopipe", "backlog", "--json"],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert backlog.returncode == 0, backlog.stderr
        assert "stream_length" in backlog.stdout
    finally:
        stack.table.stop(receiver.name)


def test_receiver_process_serves_ops_endpoints_only_on_its_ops_port(stack: Stack) -> None:
    """As the chart runs it: the webhook port (public behind a LoadBalancer) has no /metrics."""
    port, ops = free_ports(2)
    proc = start_receiver(stack, port, SHOPIPE_OPS_PORT=str(ops))
    try:
        wait_healthy(ops, proc)
        with httpx.Client(timeout=5) as c:
            for path in ("/metrics", "/status"):
                assert c.get(f"http://127.0.0.1:{port}{path}").status_code == 404, path
            assert c.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            assert c.get(f"http://127.0.0.1:{ops}/metrics").status_code == 200
            assert c.get(f"http://127.0.0.1:{ops}/status").status_code == 200
            # The webhook path is served on the webhook port only (unsigned: 401).
            hook = "/webhooks/shopify"
            assert c.post(f"http://127.0.0.1:{port}{hook}", content=b"{}").status_code == 401
            assert c.post(f"http://127.0.0.1:{ops}{hook}", content=b"{}").status_code == 404
    finally:
        text = stop(proc)
    assert proc.returncode == 0
    assert "every open segment written" in text
