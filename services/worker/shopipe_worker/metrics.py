"""The worker's metrics, exactly as docs/metrics.md lists them, on shopipe's one registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from shopipe.metrics import REGISTRY

RECORDS = Counter(
    "shopipe_worker_records",
    "Records by result: processed, duplicate, failed, deferred, dead_lettered.",
    ["topic", "outcome"],
    registry=REGISTRY,
)
SEGMENTS = Counter(
    "shopipe_worker_segments",
    "Segments by result: done, missing, unparseable.",
    ["outcome"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "shopipe_worker_handler_seconds",
    "Duration of the handlers of one record.",
    ["topic"],
    registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "shopipe_worker_end_to_end_seconds",
    "Time from a webhook's receipt to its handlers being done.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
    registry=REGISTRY,
)
FINISH_BATCH = Histogram(
    "shopipe_worker_finish_batch_segments",
    "Segments finished together (one WAIT, one DeleteObjects, one XACK).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000),
    registry=REGISTRY,
)
FINISH_UNCONFIRMED = Counter(
    "shopipe_worker_finish_unconfirmed",
    "Segments kept because no replica (or AOF fsync) confirmed their done-markers.",
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("shopipe_worker_in_flight", "Segments being processed.", registry=REGISTRY)
SWEEPER_RECOVERED = Counter(
    "shopipe_worker_sweeper_recovered",
    "Segments re-announced by the sweeper.",
    registry=REGISTRY,
)
STREAM_LAG = Gauge(
    "shopipe_backlog_stream_lag", "Entries not yet delivered to the group.", registry=REGISTRY
)
PENDING = Gauge(
    "shopipe_backlog_pending", "Entries delivered, not acknowledged.", registry=REGISTRY
)
INCOMING_OBJECTS = Gauge(
    "shopipe_backlog_incoming_objects",
    "Segments under incoming/ counted by the sweeper's last full pass.",
    registry=REGISTRY,
)
OLDEST_SECONDS = Gauge(
    "shopipe_backlog_oldest_seconds",
    "Age of the oldest segment under incoming/.",
    registry=REGISTRY,
)
HEADER_BODY_MISMATCH = Counter(
    "shopipe_worker_header_body_mismatch",
    "Destructive deliveries whose signed body does not support their headers (not applied).",
    ["topic"],
    registry=REGISTRY,
)
