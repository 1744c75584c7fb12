"""Network faults between the drills' hosts: iptables DROP (silent: no RST, the peer waits for
its timeout) or REJECT (a TCP reset at once), in one or both directions; a link down; heal.

Rules are written into the namespaces of the hosts on one side only, so a heal is a flush of
every host's filter table and every link set up again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from tests.drills.netns import Net, run

MODES = {
    "drop": "-j DROP",
    # All drill traffic is TCP: a reset is what a refusing host answers.
    "reject": "-p tcp -j REJECT --reject-with tcp-reset",
}


class Faults:
    def __init__(self, net: Net) -> None:
        self.net = net
        self.log: list[tuple[float, str]] = []  # (monotonic time, what), for the report

    def _note(self, what: str) -> None:
        self.log.append((time.monotonic(), what))

    def _apply(self, host: str, rules: list[str]) -> None:
        text = "*filter\n" + "".join(f"{r}\n" for r in rules) + "COMMIT\n"
        run("ip", "netns", "exec", self.net.ns(host), "iptables-restore", "--noflush", stdin=text)

    def cut(
        self,
        side: Iterable[str],
        others: Iterable[str],
        mode: str = "drop",
        both: bool = True,
    ) -> None:
        """Cut every host of ``side`` from every host of ``others``. ``both=False``: only what
        ``side`` sends is lost (replies to the others' packets too, so TCP cannot connect
        either way, but datagrams and RSTs from the others still arrive)."""
        target = MODES[mode]
        side, others = list(side), list(others)
        for host in side:
            rules = []
            for other in others:
                ip = self.net.ip(other)
                rules.append(f"-A OUTPUT -d {ip} {target}")
                if both:
                    rules.append(f"-A INPUT -s {ip} {target}")
            self._apply(host, rules)
        way = "<->" if both else "->"
        self._note(f"{mode} {','.join(side)} {way} {','.join(others)}")

    def isolate(self, side: Iterable[str], mode: str = "drop") -> None:
        """Cut ``side`` from every other host (S3 and the load generator included)."""
        side = list(side)
        self.cut(side, [h for h in self.net.hosts if h not in side], mode)

    def link(self, host: str, up: bool) -> None:
        """Set ``host``'s link on the bridge down or up (the cable pulled, then put back)."""
        run(
            "ip", "-n", self.net.bridge_ns, "link", "set", self.net.veth(host),
            "up" if up else "down",
        )  # fmt: skip
        self._note(f"link {host} {'up' if up else 'down'}")

    def heal(self) -> None:
        for host in self.net.hosts:
            run("ip", "netns", "exec", self.net.ns(host), "iptables", "-F")
            run("ip", "-n", self.net.bridge_ns, "link", "set", self.net.veth(host), "up")
        self._note("heal")
