"""Network hosts for the partition drills: one network namespace per process, one bridge.

The bridge lives in a namespace of its own, so nothing is added to the machine's own network:
every address (``SUBNET``) exists only inside namespaces this run created, all named with the
run's prefix ``spd<pid>-``. ``Net.destroy`` removes them (with their veths and iptables rules,
which live and die with the namespace); ``cleanup_leftovers`` removes what a run that died
(SIGKILL, power cut) left, recognised by its prefix naming a pid that no longer runs.

The test process itself talks from the ``load`` host: ``Net.enter`` moves the calling thread
into it (network namespaces are per thread), and threads started later inherit it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from shopipe_devstack.pids import CLONE_NEWNET, enter_netns

SUBNET = "10.213.0"  # only ever configured inside this run's namespaces
NETNS_DIR = Path("/run/netns")
PREFIX_RE = re.compile(r"^spd(\d+)-")
CAP_NET_ADMIN = 12

# host name -> last octet of its address
HOSTS: dict[str, int] = {
    "redis-0": 10,
    "redis-1": 11,
    "redis-2": 12,
    "sentinel-0": 20,
    "sentinel-1": 21,
    "sentinel-2": 22,
    "s3": 30,
    "receiver-0": 40,
    "receiver-1": 41,
    "worker-0": 50,
    "worker-1": 51,
    "operator": 60,
    "load": 100,
}


class NetError(RuntimeError):
    """A namespace, link or rule could not be set up."""


def missing_privilege() -> str | None:
    """Why this process cannot build the drills' network, or None when it can."""
    try:
        status = Path("/proc/self/status").read_text()
        caps = int(next(x for x in status.splitlines() if x.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        caps = 0
    if not caps & (1 << CAP_NET_ADMIN):
        return "the partition drills need root (CAP_NET_ADMIN) to create network namespaces"
    for tool in ("ip", "iptables", "iptables-restore"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            return f"the partition drills need `{tool}` on PATH"
    return None


def run(*argv: str, stdin: str | None = None) -> str:
    res = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _ns_pids(ns: str) -> list[int]:
    with contextlib.suppress(NetError):
        return [int(x) for x in run("ip", "netns", "pids", ns).split()]
    return []


def remove_namespace(ns: str) -> None:
    """SIGKILL what still runs inside ``ns`` (only ever one of ours), then delete it."""
    for pid in _ns_pids(ns):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(NetError):
        run("ip", "netns", "del", ns)


def cleanup_leftovers(prefix: str | None = None) -> list[str]:
    """Delete the namespaces of ``prefix``, or (None) of every drill run whose pid is gone."""
    removed = []
    names = sorted(p.name for p in NETNS_DIR.glob("spd*")) if NETNS_DIR.is_dir() else []
    for name in names:
        m = PREFIX_RE.match(name)
        if not m:
            continue
        mine = prefix is not None and name.startswith(prefix)
        dead = prefix is None and not _pid_alive(int(m.group(1)))
        if mine or dead:
            remove_namespace(name)
            removed.append(name)
    return removed


class Net:
    """The hosts of one run and the bridge between them."""

    def __init__(self, prefix: str | None = None, hosts: dict[str, int] | None = None) -> None:
        self.prefix = prefix or f"spd{os.getpid()}-"
        self.hosts = dict(hosts or HOSTS)
        self.bridge_ns = f"{self.prefix}bridge"
        self._home_fd: int | None = None

    def ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts[host]}"

    def veth(self, host: str) -> str:
        """The bridge's end of ``host``'s link (in the bridge namespace)."""
        return f"v{self.hosts[host]}"

    def create(self) -> None:
        try:
            run("ip", "netns", "add", self.bridge_ns)
            br = ("ip", "-n", self.bridge_ns)
            run(*br, "link", "add", "br0", "type", "bridge")
            run(*br, "link", "set", "br0", "up")
            for host in self.hosts:
                ns = self.ns(host)
                run("ip", "netns", "add", ns)
                v = self.veth(host)
                run(*br, "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", ns)
                run(*br, "link", "set", v, "master", "br0", "up")
                run("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
                run("ip", "-n", ns, "link", "set", "eth0", "up")
                run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        self.leave()
        cleanup_leftovers(self.prefix)

    # --- the test process's own host ---

    def enter(self, host: str = "load") -> None:
        """Move the calling thread into ``host``; ``leave`` moves it back."""
        if self._home_fd is None:
            self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        enter_netns(self.ns(host))

    def leave(self) -> None:
        if self._home_fd is None:
            return
        fd, self._home_fd = self._home_fd, None
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise NetError("could not return to the original network namespace")
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run the block (and what it spawns) in ``host``, then come back to where we were."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            enter_netns(self.ns(host))
            try:
                yield
            finally:
                if ctypes.CDLL(None, use_errno=True).setns(back, CLONE_NEWNET) != 0:
                    raise NetError("could not return to the previous network namespace")
        finally:
            os.close(back)
