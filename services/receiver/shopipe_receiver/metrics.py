"""The receiver's metrics (docs/metrics.md lists exactly these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from shopipe.metrics import REGISTRY, topic_label

OUTCOMES = (
    "accepted",
    "unauthorized",
    "bad_request",
    "too_large",
    "timeout",
    "unavailable",
    "overloaded",
)

REQUESTS = Counter(
    "shopipe_receiver_requests_total",
    "Webhooks by result; topic is 'unknown' before the signature is checked.",
    ["topic", "outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "shopipe_receiver_request_seconds",
    "Time from request start to answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
STORAGE_SECONDS = Histogram(
    "shopipe_receiver_storage_seconds",
    "Duration of one segment PUT.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
STORAGE_FAILURES = Counter(
    "shopipe_receiver_storage_failures_total",
    "Segment PUTs that failed (each answered 503).",
    registry=REGISTRY,
)
BODY_BYTES = Histogram(
    "shopipe_receiver_body_bytes",
    "Body sizes of accepted webhooks.",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 5242880),
    registry=REGISTRY,
)
SEGMENTS = Counter(
    "shopipe_receiver_segments_total",
    "Segments written.",
    registry=REGISTRY,
)
SEGMENT_RECORDS = Histogram(
    "shopipe_receiver_segment_records",
    "Records per written segment (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    registry=REGISTRY,
)
ANNOUNCE_FAILURES = Counter(
    "shopipe_receiver_announce_failures_total",
    "XADDs that failed after a durable write (the sweeper recovers them).",
    registry=REGISTRY,
)

PUTS_IN_FLIGHT = Gauge(
    "shopipe_receiver_puts_in_flight",
    "Segment PUTs in flight now (never above SHOPIPE_MAX_PUTS_IN_FLIGHT).",
    registry=REGISTRY,
)
BODY_BYTES_HELD = Gauge(
    "shopipe_receiver_body_bytes_held",
    "Body bytes held in memory now (SHOPIPE_MAX_BODY_BYTES_IN_MEMORY bounds it).",
    registry=REGISTRY,
)
SHEDDING = Gauge(
    "shopipe_receiver_shedding",
    "1 while the receiver answers 503 for lack of capacity (and /readyz fails), else 0.",
    registry=REGISTRY,
)
HTTP_REFUSED = Counter(
    "shopipe_receiver_http_refused_total",
    "Requests refused before the app saw them, by reason: header_count and header_bytes "
    "(431), head_timeout (connection closed), connections (503).",
    ["reason"],
    registry=REGISTRY,
)


def watch(
    puts: Callable[[], float], held: Callable[[], float], shedding: Callable[[], bool]
) -> None:
    """The gauges read the receiver's state when scraped: nothing to update on the hot path."""
    PUTS_IN_FLIGHT.set_function(puts)
    BODY_BYTES_HELD.set_function(held)
    SHEDDING.set_function(lambda: float(shedding()))


# Label children by (topic label, outcome): ``labels()`` takes a lock and builds a key per call,
# a dict lookup does not. Bounded, as topic labels are (shopipe.topics.PUBLISHED + other).
_children: dict[tuple[str, str], Any] = {}


def count(topic: str, outcome: str) -> None:
    key = (topic_label(topic), outcome)
    child = _children.get(key)
    if child is None:
        child = _children[key] = REQUESTS.labels(topic=key[0], outcome=outcome)
    child.inc()
