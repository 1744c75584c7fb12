"""The local stack: Redis master + two replicas, three Sentinels, SeaweedFS S3; one state dir.

Used by `shopipe dev` and by the test fixtures alike, so tests run against what developers run.
Components start in list order; one marked ``blocking`` must be ready before the next starts,
the others are awaited at the end, so SeaweedFS (the slow one) starts first and overlaps.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import signal as _signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import redis
from shopipe.address import Address, fmt

from shopipe_devstack.component import Component, wait_until
from shopipe_devstack.info import StackInfo, load_secrets
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.redis import RedisNode, client
from shopipe_devstack.seaweed import Seaweed, WeedPorts
from shopipe_devstack.sentinels import Sentinels, agreed_master
from shopipe_devstack.state import StackError, free_ports, pick
from shopipe_devstack.supervisor import Backoff, Supervisor

ComponentFactory = Callable[[ProcessTable, StackInfo], Component]
PORT_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class Ports:
    """Fixed ports; 0 means "a free one". SeaweedFS's internal ports are always free ones."""

    redis: tuple[int, int, int] = (0, 0, 0)
    sentinels: tuple[int, int, int] = (0, 0, 0)
    s3: int = 0


class Stack:
    def __init__(
        self,
        state_dir: Path,
        *,
        sentinel_down_after_ms: int = 5000,
        failover_timeout_ms: int = 10000,
        master_name: str = "mymaster",
        bind: str = "127.0.0.1",
        ports: Ports | None = None,
        bucket: str = "shopipe",
        fresh: bool = False,
        redis_binary: str | None = None,
        supervise: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        """``supervise``: restart processes that die (``shopipe_devstack.supervisor``), as
        `shopipe dev` does. Off by default, so that the test suite's drills find a killed
        process still dead until they restart it; a drill that wants it on says so."""
        self.state_dir = Path(state_dir).resolve()
        self.sentinel_down_after_ms = sentinel_down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master_name = master_name
        self.bind = bind
        self.ports = ports or Ports()
        self.bucket = bucket
        self.fresh = fresh
        self.redis_binary = redis_binary  # None: redis-server on PATH, else valkey-server
        self.table = ProcessTable(self.state_dir)
        self.components: list[Component] = []
        self.timings: dict[str, float] = {}  # seconds from start() to each component ready
        self._info: StackInfo | None = None
        self._factories: list[ComponentFactory] = []
        self._log_marks: dict[str, int] = {}  # log sizes when the current attempt began
        self.supervise = supervise
        self.backoff = backoff
        self.supervisor: Supervisor | None = None

    # --- life cycle ---

    @property
    def info(self) -> StackInfo:
        if self._info is None:
            raise StackError("the stack is not started")
        return self._info

    def _plan(self) -> StackInfo:
        p = self.ports
        pool = free_ports(14, self.bind)
        weed = WeedPorts(
            master=pool.pop(),
            master_grpc=pool.pop(),
            volume=pool.pop(),
            volume_grpc=pool.pop(),
            filer=pool.pop(),
            filer_grpc=pool.pop(),
            s3=pick(pool, p.s3),
            s3_grpc=pool.pop(),
        )
        return StackInfo(
            state_dir=self.state_dir,
            master_name=self.master_name,
            redis_nodes=tuple((self.bind, pick(pool, port)) for port in p.redis),
            sentinels=tuple((self.bind, pick(pool, port)) for port in p.sentinels),
            s3_endpoint=f"http://{self.bind}:{weed.s3}",
            s3_bucket=self.bucket,
            bind=self.bind,
            weed_ports=weed,
            sentinel_down_after_ms=self.sentinel_down_after_ms,
            failover_timeout_ms=self.failover_timeout_ms,
            **load_secrets(self.state_dir),
        )

    def _build(self, info: StackInfo) -> list[Component]:
        # Three nodes as the chart's default: with min-replicas-to-write 1 (the shared policy)
        # the master keeps taking writes while one node is down, as in production.
        master, *replicas = info.redis_nodes
        t = self.table
        return [
            Seaweed(
                t, info.bind, info.weed_ports, info.s3_bucket, info.s3_access_key,
                info.s3_secret_key,
            ),
            RedisNode(t, 0, master, info.redis_password, binary=self.redis_binary),
            *(
                RedisNode(t, i, addr, info.redis_password, replicaof=master,
                          binary=self.redis_binary)
                for i, addr in enumerate(replicas, start=1)
            ),
            Sentinels(
                t, list(info.sentinels), master, info.master_name, info.redis_password,
                info.sentinel_down_after_ms, info.failover_timeout_ms, replicas=len(replicas),
                binary=self.redis_binary,
            ),
        ]  # fmt: skip

    def add(self, factory: ComponentFactory) -> None:
        """Register an extra component (e.g. Prometheus), built at ``start`` once ports and
        secrets are known: ``factory(table, info) -> Component``. Starts after the others."""
        if self._info is not None:
            raise StackError("add components before start()")
        self._factories.append(factory)

    def start(self) -> StackInfo:
        """Clean up what a crashed run left, then start everything and wait until it is
        really usable. Raises StackError naming the component (and its log) that failed."""
        t0 = time.monotonic()
        self.table.stop_all(timeout=1.0)  # stale processes of a previous run, verified ours
        if self.fresh:
            for sub in ("redis", "sentinel", "s3"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        for attempt in range(PORT_ATTEMPTS):
            try:
                info = self._start_once(t0)
            except StackError:
                # A free port picked for us can be taken by another suite before our server
                # binds it; try again with new ones (fixed ports would only fail again).
                if attempt + 1 < PORT_ATTEMPTS and self._lost_a_port_race():
                    continue
                raise
            self.timings["total"] = time.monotonic() - t0
            if self.supervise:
                self._supervise()
            return info
        raise AssertionError("unreachable")

    def _start_once(self, t0: float) -> StackInfo:
        self._log_marks = {
            p.name: p.stat().st_size for p in self.table.log_dir.glob("*.log") if p.is_file()
        }
        info = self._plan()
        info.save()
        self._info = info
        self.components = self._build(info) + [f(self.table, info) for f in self._factories]
        pending: list[Component] = []
        try:
            for comp in self.components:
                comp.start()
                if comp.blocking:
                    comp.wait_ready(time.monotonic() + comp.ready_timeout)
                    self.timings[comp.name] = time.monotonic() - t0
                else:
                    pending.append(comp)
            for comp in pending:
                comp.wait_ready(time.monotonic() + comp.ready_timeout)
                self.timings[comp.name] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return info

    def _supervise(self) -> None:
        hooks = {
            name: functools.partial(comp.before_restart, name)
            for comp in self.components
            for name in comp.process_names()
        }
        self.supervisor = Supervisor(self.table, self.backoff, before_restart=hooks)
        self.supervisor.start()

    def _lost_a_port_race(self) -> bool:
        if self.ports != Ports():
            return False
        for comp in self.components:
            for name in comp.process_names():
                path = self.table.log_path(name)
                try:
                    with open(path, "rb") as f:
                        f.seek(self._log_marks.get(path.name, 0))
                        if b"already in use" in f.read().lower():  # this attempt's lines only
                            return True
                except OSError:
                    continue
        return False

    def stop(self) -> None:
        """Stop every process: pipeline processes first (last started first), then the
        components in reverse order, then anything else recorded in the table."""
        if self.supervisor is not None:
            self.supervisor.stop()  # first: what stops now must stay stopped
            self.supervisor = None
        owned = {n for c in self.components for n in c.process_names()}
        others = [r.name for r in reversed(self.table.records()) if r.name not in owned]
        self.table.stop_many(others, 5.0)
        for comp in reversed(self.components):
            comp.stop()
        self.table.stop_all()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- pipeline processes ---

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> int:
        """Run a process under the stack's table (stopped with the stack); returns its pid.
        Output goes to ``info.log_dir / f"{name}.log"``."""
        return self.table.spawn(name, argv, env, meta=meta)

    def stop_process(self, name: str, timeout: float = 5.0) -> None:
        self.table.stop(name, timeout)

    # --- Redis fault injection ---

    def _node(self, which: int | Address | str) -> RedisNode:
        nodes = [c for c in self.components if isinstance(c, RedisNode)]
        if isinstance(which, int):
            return nodes[which]
        addr = which
        if isinstance(which, str):
            host, _, port = which.rpartition(":")
            addr = (host, int(port))
        for node in nodes:
            if node.addr == addr:
                return node
        raise StackError(f"no redis node at {which}")

    def kill_redis(self, which: int | Address | str, signal: int = _signal.SIGKILL) -> Address:
        """Signal one Redis node (index, (host, port) or "host:port"); for SIGKILL, SIGTERM
        and SIGINT wait until it is gone. Returns its address."""
        node = self._node(which)
        if not self.table.signal(node.name, signal):
            raise StackError(f"{node.name} is not running")
        if signal in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT):
            if not self.table.wait_exit(node.name, 10.0):
                raise StackError(f"{node.name} did not exit after signal {signal}")
            if self.supervisor is None:
                self.table.forget(node.name)  # supervised, it is a crash to come back from
        return node.addr

    def restart_redis(self, which: int | Address | str, timeout: float = 15.0) -> Address:
        """Start a stopped node again, as a replica of the master the Sentinels name now
        (or as master if they still name it). Waits until it answers PING."""
        node = self._node(which)
        if self.table.alive(node.name) and self.table.signal(node.name, _signal.SIGCONT):
            return node.addr  # it was only paused (SIGSTOP)
        master = agreed_master(list(self.info.sentinels), self.master_name)
        node.replicaof = None if master in (None, node.addr) else master
        node.start()
        node.wait_ready(time.monotonic() + timeout)
        return node.addr

    def current_master(self) -> Address:
        """The master a majority of the Sentinels name."""
        addr = agreed_master(list(self.info.sentinels), self.master_name)
        if addr is None:
            raise StackError("the Sentinels do not agree on a master")
        return addr

    def wait_failover(self, old: Address, timeout: float = 30.0) -> Address:
        """Poll until every Sentinel names a master other than ``old`` and that node
        says ROLE master; return it."""
        found: list[Address] = []

        def check() -> str | None:
            addr = agreed_master(list(self.info.sentinels), self.master_name)
            if addr is None or addr == old:
                return f"sentinels still name {fmt(old)}"
            try:
                with client(addr, self.info.redis_password) as r:
                    role = r.role()
            except redis.RedisError as e:
                return f"new master {fmt(addr)}: {type(e).__name__}"
            if role[0] != "master":
                return f"{fmt(addr)} is not master yet"
            found.append(addr)
            return None

        wait_until("failover", check, time.monotonic() + timeout)
        return found[-1]

    # --- S3 fault injection ---

    def _s3(self) -> Seaweed:
        for c in self.components:
            if isinstance(c, Seaweed):
                return c
        raise StackError("the stack has no S3 component")

    def stop_s3(self) -> None:
        self._s3().stop()

    def start_s3(self, timeout: float = 30.0) -> None:
        """Start SeaweedFS again on the same ports and data; waits until HeadBucket passes
        and every volume on disk is served again."""
        s3 = self._s3()
        s3.start()
        s3.wait_ready(time.monotonic() + timeout)
