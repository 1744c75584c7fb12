"""Three Sentinels watching the master with quorum 2, as in production."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

from shopipe_devstack.component import Component
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.redis import Address, client, redis_binary
from shopipe_devstack.state import PRIVATE_UMASK, write_private

QUORUM = 2


def _pairs(raw: Any) -> dict[str, str]:
    """SENTINEL MASTER answers a flat [k, v, k, v...] list (RESP2) or a map (RESP3)."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    items = list(raw)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def ask(addr: Address, master_name: str, timeout: float = 1.0) -> Address | None:
    """One Sentinel's answer to get-master-addr-by-name; None if it did not answer."""
    try:
        with client(addr, None, timeout) as r:
            got = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
    except redis.RedisError:
        return None
    if not got:
        return None
    return str(got[0]), int(got[1])


def agreed_master(sentinels: list[Address], master_name: str) -> Address | None:
    """The address a majority of the Sentinels name, or None."""
    votes = Counter(a for a in (ask(s, master_name) for s in sentinels) if a is not None)
    if not votes:
        return None
    addr, n = votes.most_common(1)[0]
    return addr if n >= len(sentinels) // 2 + 1 else None


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
                    info = _pairs(r.execute_command("SENTINEL", "MASTER", self.master_name))
            except redis.RedisError as e:
                return f"SENTINEL MASTER on {s[0]}:{s[1]}: {type(e).__name__}"
            if int(info.get("num-slaves", 0)) < self.replicas:
                return f"sentinel {s[0]}:{s[1]} does not see the replica yet"
            if int(info.get("num-other-sentinels", 0)) < others:
                return f"sentinel {s[0]}:{s[1]} does not know its {others} peers yet"
        return None

    def stop_timeout(self) -> float:
        return 3.0
