"""Running the chart's Redis scripts (charts/shopipe/files) outside a cluster: under /bin/sh,
with stand-ins for `hostname` and `redis-cli` on PATH (the cluster's DNS is out of reach) that
answer as the Sentinels and Redis pods of a scenario would. Used by the unit tests of their
decisions and by the integration tests that start real Redis servers from their output."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

FILES = Path(__file__).resolve().parents[1] / "charts/shopipe/files"
R = "shop-shopipe-redis"
RH = "shop-shopipe-redis-headless"
S = "shop-shopipe-sentinel"
SH = "shop-shopipe-sentinel-headless"

# redis-cli stand-in: answers from files under $FAKE_DIR named after the host asked ("local"
# without -h), like a Sentinel (get-master-addr-by-name, FAILOVER) or a Redis pod (ROLE, INFO
# replication) would; no file: connection refused.
FAKE_CLI = """#!/bin/sh
host=""; cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h) host="$2"; shift 2 ;;
    -p) shift 2 ;;
    --raw|--no-auth-warning) shift ;;
    *) cmd="$cmd $1"; shift ;;
  esac
done
[ -n "$REDISCLI_AUTH" ] || { echo "NOAUTH Authentication required."; exit 0; }
[ -n "$host" ] || host=local
case "$cmd" in
  *get-master-addr-by-name*) f="$FAKE_DIR/sentinel.$host" ;;
  *ROLE*) f="$FAKE_DIR/role.$host" ;;
  *"INFO replication"*) f="$FAKE_DIR/info.$host" ;;
  *"SENTINEL FAILOVER"*)
    # A Sentinel that accepts: remember who was asked; the local master becomes a replica.
    [ -f "$FAKE_DIR/failover.$host" ] || { echo "Could not connect" >&2; exit 1; }
    echo "$host" >> "$FAKE_DIR/asked"; echo slave > "$FAKE_DIR/role.local"; echo OK; exit 0 ;;
  *) exit 1 ;;
esac
[ -f "$f" ] || { echo "Could not connect to Redis at $host" >&2; exit 1; }
cat "$f"
"""


def run_script(tmp_path: Path, name: str, me: str, answers: dict[str, str], **env: str) -> str:
    proc = run_raw(tmp_path, name, me, answers, **env)
    assert proc.returncode == 0, proc.stderr
    conf = tmp_path / "conf"
    out = conf / ("redis.conf" if name == "redis-init.sh" else "sentinel.conf")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    return out.read_text()


def run_raw(
    tmp_path: Path, name: str, me: str, answers: dict[str, str], **env: str
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    fake = tmp_path / "fake"
    conf = tmp_path / "conf"
    for d in (bin_dir, fake, conf):
        d.mkdir(parents=True, exist_ok=True)
    (bin_dir / "redis-cli").write_text(FAKE_CLI)
    (bin_dir / "hostname").write_text(f"#!/bin/sh\necho {me}\n")
    for tool in ("redis-cli", "hostname"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    for file, content in answers.items():
        (fake / file).write_text(content)
    base = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_DIR": str(fake),
        "REDIS_PASSWORD": "redis-pass-0123456789",
        "SENTINEL_PASSWORD": "sentinel-pass-0123456789",
        "MASTER_NAME": "mymaster",
        "REDIS_STS": R,
        "REDIS_HEADLESS": RH,
        "REDIS_REPLICAS": "3",
        "SENTINEL_STS": S,
        "SENTINEL_HEADLESS": SH,
        "SENTINEL_REPLICAS": "3",
        "QUORUM": "2",
        "CONF_DIR": str(conf),
    }
    return subprocess.run(
        ["sh", str(FILES / name)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port(hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A port free right now on every loopback address of ``hosts`` (a race we accept)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((hosts[0], 0))
            port: int = sock.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on all of {hosts}")


@contextlib.contextmanager
def local_redis(
    workdir: Path,
    conf: str,
    password: str,
    replicaof: int | tuple[str, int] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    sentinel: bool = False,
) -> Iterator[redis.Redis]:
    """A real redis-server from ``conf`` (what redis-init.sh wrote for a pod), moved onto
    loopback by settings appended after it (Redis keeps a setting's last value) and into
    ``workdir``; on ``host`` (any 127.0.0.0/8 address: several servers can share a port, as
    pods do); a replica of ``replicaof`` (a port on 127.0.0.1, or host and port) if given.
    A Sentinel with ``sentinel``. Yields a client that authenticates with ``password``; stopped
    (SIGTERM, then SIGKILL after a deadline) on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port((host,))
    local = [
        "", "# --- this test: loopback, its own directory ---", f"port {port}",
        f"bind {host}", f"replica-announce-ip {host}",
        f"logfile {workdir / 'redis.log'}", "repl-diskless-sync-delay 0",
    ]  # fmt: skip
    if isinstance(replicaof, int):
        replicaof = ("127.0.0.1", replicaof)
    if replicaof is not None:
        local.append(f"replicaof {replicaof[0]} {replicaof[1]}")
    path = workdir / "redis.conf"
    # `dir` is applied as read (a chdir): the pod's /data is replaced, not overridden.
    conf = conf.replace("\ndir /data\n", f"\ndir {workdir}\n")
    path.write_text(conf + "\n".join(local) + "\n")
    argv = [binary, str(path), *(["--sentinel"] if sentinel else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    client = redis.Redis(
        host=host, port=port, password=password, socket_timeout=2, decode_responses=True
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert proc.poll() is None, (workdir / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def written(master: redis.Redis, key: str, value: str) -> bool:
    """SET on a master with the chart's min-replicas-to-write: False while it refuses
    (NOREPLICAS: it counts a replica only once the replica's first acknowledgement arrived)."""
    try:
        return bool(master.set(key, value))
    except redis.ResponseError as e:
        if "NOREPLICAS" in str(e):
            return False
        raise


def until(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def link_up(replica: redis.Redis) -> bool:
    """The replica's link to its master is up (it has synced)."""
    return replica.info("replication").get("master_link_status") == "up"
