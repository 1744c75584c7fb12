"""Server addresses (host, port): the one type for Sentinels, Redis nodes and the dev stack.

A pair rather than a string so that comparing two is exact (no "localhost" against "::1"
spelling games inside shopipe); ``fmt`` and ``parse_address`` convert at the edges (settings,
logs, /status, Sentinel's replies).
"""

from __future__ import annotations

from shopipe.errors import ConfigError

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    """``host:port`` (``[v6]:port`` too) to an Address; ConfigError naming the text otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"bad address {text!r}: expected host:port")
    return host.strip("[]"), int(port)


def fmt(addr: Address) -> str:
    """``host:port``, as /status, the logs and the metrics show an address."""
    return f"{addr[0]}:{addr[1]}"
