"""The dev stack spread over the drills' network hosts.

``NetStack`` is the dev stack (``shopipe_devstack.Stack``: same components, same process table,
same fault helpers) with every server started inside its own namespace and bound to that
host's address; ``start_pipeline`` adds two receivers, two workers and the operator, each on a
host of its own too. Redis runs with the chart's write guard (min-replicas-to-write 1,
min-replicas-max-lag 10) so the drills test what production runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shopipe.address import Address
from shopipe_devstack import Stack
from shopipe_devstack.info import StackInfo, load_secrets
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.redis import RedisNode, redis_binary
from shopipe_devstack.seaweed import Seaweed, WeedPorts
from shopipe_devstack.sentinels import Sentinels
from shopipe_devstack.services import Service, spawn_service, wait_healthy
from shopipe_devstack.stack import Ports
from shopipe_devstack.state import StackError, free_ports

from tests.drills.netns import Net

REDIS_PORT, SENTINEL_PORT, HTTP_PORT = 6379, 26379, 8080
HERE = Path(__file__).parent
# The chart's write guard (charts/shopipe/files/redis.conf, which the dev stack's Redis reads
# too): an isolated master refuses writes once its replicas are silent this long.
MAX_LAG_SECONDS = 10
# Short Sentinel timings, as the suite's stacks use, so failovers take seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000

DRILL_WORKER_ENV = {
    "SHOPIPE_HANDLERS": "drill_handlers",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    "SHOPIPE_BLOCK_SECONDS": "0.2",
    "SHOPIPE_CLAIM_IDLE_SECONDS": "3",
    "SHOPIPE_RETRY_BASE_SECONDS": "0.1",
    "SHOPIPE_RETRY_MAX_SECONDS": "0.5",
    "SHOPIPE_SWEEP_INTERVAL_SECONDS": "1",
    "SHOPIPE_SWEEP_GRACE_SECONDS": "3",
    "SHOPIPE_DRAIN_SECONDS": "3",
    "SHOPIPE_REDIS_TIMEOUT_SECONDS": "1",
    "SHOPIPE_LOG_LEVEL": "warning",
}
OPERATOR_ENV = {
    "SHOPIPE_RECONCILE_SECONDS": "0.5",
    "SHOPIPE_LISTING_INTERVAL_SECONDS": "1",
    "SHOPIPE_REDIS_TIMEOUT_SECONDS": "0.5",
    "SHOPIPE_STALE_GRACE_SECONDS": "10",
    "SHOPIPE_MIN_WORKERS": "2",
    "SHOPIPE_MAX_WORKERS": "2",
    "SHOPIPE_LOG_LEVEL": "info",
}
RECEIVER_ENV = {"SHOPIPE_LOG_LEVEL": "warning", "SHOPIPE_REDIS_TIMEOUT_SECONDS": "1"}


class NsRedisNode(RedisNode):
    def __init__(self, net: Net, host: str, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.net, self.host = net, host

    def start(self) -> None:
        with self.net.inside(self.host):
            super().start()


class NsSentinels(Sentinels):
    def __init__(self, net: Net, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.net = net

    def start(self) -> None:
        # Sentinels.start spawns all three; here each goes into its own host.
        for name, addr in zip(self.process_names(), self.addrs, strict=True):
            home = self.table.state_dir / "sentinel" / name
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "sentinel.conf"
            conf.write_text(self.config_text(addr, str(home)))
            conf.chmod(0o600)
            with self.net.inside(name):
                self.table.spawn(name, [self.binary or redis_binary(), str(conf), "--sentinel"])

    def start_one(self, index: int) -> None:
        """Start one Sentinel again with the config it rewrote (epochs, peers), as a restarted
        pod keeps its volume."""
        name = self.process_names()[index]
        conf = self.table.state_dir / "sentinel" / name / "sentinel.conf"
        with self.net.inside(name):
            self.table.spawn(name, [self.binary or redis_binary(), str(conf), "--sentinel"])


class NsSeaweed(Seaweed):
    def __init__(self, net: Net, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.net = net

    def start(self) -> None:
        with self.net.inside("s3"):
            super().start()


class NetStack(Stack):
    def __init__(self, state_dir: Path, net: Net) -> None:
        super().__init__(
            state_dir,
            sentinel_down_after_ms=DOWN_AFTER_MS,
            failover_timeout_ms=FAILOVER_TIMEOUT_MS,
            bind=net.ip("load"),
            # Fixed ports: each host has its own address, so nothing collides.
            ports=Ports((REDIS_PORT,) * 3, (SENTINEL_PORT,) * 3, 8333),
        )
        self.net = net
        self.pipeline: dict[str, Service] = {}

    def _plan(self) -> StackInfo:
        # Random high ports for SeaweedFS's internals: it names unix sockets in the shared
        # /tmp after them, which must not meet another stack's.
        p = free_ports(7)
        weed = WeedPorts(p[0], p[1], p[2], p[3], p[4], p[5], s3=8333, s3_grpc=p[6])
        n = self.net
        return StackInfo(
            state_dir=self.state_dir,
            master_name=self.master_name,
            redis_nodes=tuple((n.ip(f"redis-{i}"), REDIS_PORT) for i in range(3)),
            sentinels=tuple((n.ip(f"sentinel-{i}"), SENTINEL_PORT) for i in range(3)),
            s3_endpoint=f"http://{n.ip('s3')}:{weed.s3}",
            s3_bucket=self.bucket,
            bind=self.bind,
            weed_ports=weed,
            sentinel_down_after_ms=self.sentinel_down_after_ms,
            failover_timeout_ms=self.failover_timeout_ms,
            **load_secrets(self.state_dir),
        )

    def _build(self, info: StackInfo) -> list:  # type: ignore[type-arg]
        master, *replicas = info.redis_nodes
        t, n, pw = self.table, self.net, info.redis_password
        return [
            NsSeaweed(
                n, t, n.ip("s3"), info.weed_ports, info.s3_bucket, info.s3_access_key,
                info.s3_secret_key,
            ),
            NsRedisNode(n, "redis-0", t, 0, master, pw),
            *(
                NsRedisNode(n, f"redis-{i}", t, i, addr, pw, replicaof=master)
                for i, addr in enumerate(replicas, start=1)
            ),
            NsSentinels(
                n, t, list(info.sentinels), master, info.master_name, pw,
                info.sentinel_down_after_ms, info.failover_timeout_ms,
            ),
        ]  # fmt: skip

    @property
    def sentinels(self) -> NsSentinels:
        return next(c for c in self.components if isinstance(c, NsSentinels))

    def elected_other_than(self, old: Address) -> Address | None:
        """The master the Sentinels agree on when it is not ``old``; else None (no agreement
        yet, or still ``old``). Three Redis nodes: either replica may be elected."""
        try:
            addr = self.current_master()
        except StackError:
            return None
        return None if addr == old else addr

    def redis_host(self, addr: Address) -> str:
        """``redis-<i>``: the host serving ``addr``."""
        return f"redis-{self.info.redis_nodes.index(addr)}"

    # --- the pipeline ---

    def spawn(self, kind: str, host: str, env: dict[str, str]) -> Service:  # type: ignore[override]
        svc = spawn_service(
            self.table, self.info, kind, host, port=HTTP_PORT, extra_env=env,
            host=self.net.ip(host), netns=self.net.ns(host),
        )  # fmt: skip
        self.pipeline[host] = svc
        return svc

    def start_pipeline(self, runs_dir: Path, operator: bool = True) -> None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        worker_env = {**DRILL_WORKER_ENV, "DRILL_RUNS_DIR": str(runs_dir)}
        for i in range(2):
            self.spawn("receiver", f"receiver-{i}", RECEIVER_ENV)
            self.spawn("worker", f"worker-{i}", worker_env)
        if operator:
            # The operator restarts workers with its own environment: give it theirs too.
            self.spawn("operator", "operator", {**worker_env, **OPERATOR_ENV})
        for svc in list(self.pipeline.values()):
            wait_healthy(self.table, svc, self.info.bind, 60.0)

    def url(self, host: str, path: str) -> str:
        return f"http://{self.net.ip(host)}:{HTTP_PORT}{path}"


def table_spawns(table: ProcessTable, name: str) -> int:
    """How many times ``name`` was started under ``table`` (restarts included)."""
    path = table.dir / "ledger.jsonl"
    if not path.exists():
        return 0
    return sum(json.loads(x)["name"] == name for x in path.read_text().splitlines() if x.strip())
