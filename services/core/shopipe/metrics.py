"""The one Prometheus registry of a shopipe process, and the metrics every process has.

Services define their own metrics in their ``metrics`` module on ``REGISTRY``; docs/metrics.md
lists them all and a test holds the two together.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from shopipe import __version__
from shopipe.topics import PUBLISHED

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Gauge(
    "shopipe_build_info",
    "Always 1; labels name the build.",
    ["service", "version"],
    registry=REGISTRY,
)
REDIS_MASTER_INFO = Gauge(
    "shopipe_redis_master_info",
    "1 for the Redis master address this process uses now.",
    ["service", "address"],
    registry=REGISTRY,
)
REDIS_RECONNECTS = Counter(
    "shopipe_redis_reconnects_total",
    "Re-resolutions of the Redis master after a connection error.",
    ["service"],
    registry=REGISTRY,
)

_current_master: dict[str, str] = {}

# The topic header is unsigned: a label taken from it as it comes would let forged topics add
# series without bound. Shopify's published topics (shopipe.topics) are labels; anything else is
# "other". "unknown" is the receiver's label for a request refused before its topic was read.
UNKNOWN = "unknown"
OTHER = "other"


def topic_label(topic: str) -> str:
    """A bounded-cardinality label for ``topic``: a published Shopify topic, or ``other``."""
    if topic in PUBLISHED or topic == UNKNOWN:
        return topic
    return OTHER


def set_build_info(service: str) -> None:
    BUILD_INFO.labels(service=service, version=__version__).set(1)


def set_master(service: str, address: str | None) -> None:
    """Point the master-info gauge at ``address``; the old address's series goes away."""
    old = _current_master.pop(service, None)
    if old is not None and old != address:
        REDIS_MASTER_INFO.remove(service, old)
    if address is not None:
        REDIS_MASTER_INFO.labels(service=service, address=address).set(1)
        _current_master[service] = address


def count_reconnect(service: str) -> None:
    REDIS_RECONNECTS.labels(service=service).inc()


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
