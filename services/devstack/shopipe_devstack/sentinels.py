"""Three Sentinels watching the master with quorum 2, as in production."""

from __future__ import annotations

import redis
from shopipe.address import Address
from shopipe.sentinel import majority

from shopipe_devstack.component import Component
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.redis import client, redis_binary
from shopipe_devstack.state import PRIVATE_UMASK, write_private

QUORUM = 2


def ask(addr: Address, master_name: str, timeout: float = 1.0) -> Address | None:
    """One Sentinel's answer to get-master-addr-by-name; None if it did not answer."""
    try:
        with client(addr, None, timeout) as r:
            got = r.sentinel_get_master_addr_by_name(master_name)
    except redis.RedisError:
        return None
    return (str(got[0]), int(got[1])) if isinstance(got, tuple) else None


def agreed_master(sentinels: list[Address], master_name: str) -> Address | None:
    """The address a majority of the Sentinels name, or None (shopipe.sentinel.majority)."""
    return majority({s: ask(s, master_name) for s in sentinels}, len(sentinels))


class Sentinels(Component):
    name = "sentinels"
    ready_timeout = 20.0

    def __init__(
        self,
        table: ProcessTable,
        addrs: list[Address],
        master: Address,
        master_name: str,
        password: str,
        down_after_ms: int,
        failover_timeout_ms: int,
        replicas: int = 1,
        binary: str | None = None,
    ) -> None:
        super().__init__(table)
        self.binary = binary
        self.addrs = addrs
        self.master = master
        self.master_name = master_name
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.replicas = replicas

    def process_names(self) -> list[str]:
        return [f"sentinel-{i}" for i in range(len(self.addrs))]

    def config_text(self, addr: Address, home: str) -> str:
        n = self.master_name
        return "\n".join(
            [
                f"bind {addr[0]}",
                f"port {addr[1]}",
                "daemonize no",
                'logfile ""',
                f"dir {home}",
                f"sentinel monitor {n} {self.master[0]} {self.master[1]} {QUORUM}",
                f"sentinel auth-pass {n} {self.password}",
                f"sentinel down-after-milliseconds {n} {self.down_after_ms}",
                f"sentinel failover-timeout {n} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {n} 1",
                "",
            ]
        )

    def start(self) -> None:
        binary = self.binary or redis_binary()
        for name, addr in zip(self.process_names(), self.addrs, strict=True):
            home = self.table.state_dir / "sentinel" / name
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "sentinel.conf"
            # A fresh file each start: Sentinel rewrites it with what it learnt (other
            # sentinels, replicas, epochs) and that must not leak from a previous run.
            write_private(conf, self.config_text(addr, str(home)))
            argv = [binary, str(conf), "--sentinel"]
            self.table.spawn(name, argv, umask=PRIVATE_UMASK)

    def check(self) -> str | None:
        """Every Sentinel names the same master and knows the replica and its two peers:
        before that a failover cannot be authorised, and drills would flake."""
        answers = {s: ask(s, self.master_name) for s in self.addrs}
        missing = [f"{h}:{p}" for (h, p), a in answers.items() if a is None]
        if missing:
            return f"no master address from sentinel {', '.join(missing)}"
        if len(set(answers.values())) != 1:
            return "sentinels disagree on the master"
        others = len(self.addrs) - 1
        for s in self.addrs:
            try:
                with client(s, None) as r:
                    info = r.sentinel_master(self.master_name)
            except redis.RedisError as e:
                return f"SENTINEL MASTER on {s[0]}:{s[1]}: {type(e).__name__}"
            if int(info.get("num-slaves", 0)) < self.replicas:
                return f"sentinel {s[0]}:{s[1]} does not see the replica yet"
            if int(info.get("num-other-sentinels", 0)) < others:
                return f"sentinel {s[0]}:{s[1]} does not know its {others} peers yet"
        return None

    def stop_timeout(self) -> float:
        return 3.0
