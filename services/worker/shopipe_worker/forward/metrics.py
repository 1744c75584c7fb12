"""The forward handler's metrics (docs/metrics.md), on shopipe's one registry.

``route`` is the one label from configuration (bounded by the routes file); the others are
fixed sets: ``outcome``, ``status_class``, ``reason``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from shopipe.metrics import REGISTRY

DELIVERIES = Counter(
    "shopipe_forward_deliveries",
    "Deliveries tried, by outcome: delivered, failed (transient), refused (4xx), gone (410).",
    ["route", "outcome"],
    registry=REGISTRY,
)
ANSWERS = Counter(
    "shopipe_forward_answers",
    "Answers by status class: 2xx, 3xx, 4xx, 5xx, none (timeout or connection error).",
    ["route", "status_class"],
    registry=REGISTRY,
)
SECONDS = Histogram(
    "shopipe_forward_delivery_seconds",
    "Duration of one delivery, request sent to answer read (or failed).",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "shopipe_forward_in_flight",
    "Deliveries in flight from this process.",
    ["route"],
    registry=REGISTRY,
)
DEFERRED = Counter(
    "shopipe_forward_deferred",
    "Records not sent now, retried without using an attempt: throttled, circuit_open.",
    ["route", "reason"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "shopipe_forward_breaker_open",
    "1 while the route's circuit breaker is open (as this process last saw it).",
    ["route"],
    registry=REGISTRY,
)
DISABLED = Gauge(
    "shopipe_forward_route_disabled",
    "1 while the route is disabled after a 410 (as this process last saw it).",
    ["route"],
    registry=REGISTRY,
)
DISABLES = Counter(
    "shopipe_forward_route_disables",
    "Times this process disabled the route because its destination answered 410.",
    ["route"],
    registry=REGISTRY,
)


def status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


OUTCOMES = ("delivered", "failed", "refused", "gone")
CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")
REASONS = ("throttled", "circuit_open")


def init(route: str) -> None:
    """Every series of ``route`` at zero from the start: rate() and the alerts see a route that
    has had no delivery yet, and the dashboard shows it."""
    for outcome in OUTCOMES:
        DELIVERIES.labels(route=route, outcome=outcome)
    for cls in CLASSES:
        ANSWERS.labels(route=route, status_class=cls)
    for reason in REASONS:
        DEFERRED.labels(route=route, reason=reason)
    for metric in (SECONDS, IN_FLIGHT, BREAKER_OPEN, DISABLED, DISABLES):
        metric.labels(route=route)
