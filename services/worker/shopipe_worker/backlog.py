"""The worker's backlog gauges. The measure itself is ``shopipe.backlog`` (shared with the
operator's scaler and ``shopipe backlog``); its names are re-exported for the sweeper."""

from __future__ import annotations

from shopipe.backlog import (
    SCAN_CAP,
    Backlog,
    StreamBacklog,
    incoming_summary,
    measure,
    stream_backlog,
)

from shopipe_worker import metrics as m

__all__ = [
    "SCAN_CAP",
    "Backlog",
    "StreamBacklog",
    "incoming_summary",
    "measure",
    "publish_incoming",
    "publish_stream",
    "stream_backlog",
]


def publish_stream(sb: StreamBacklog) -> None:
    m.STREAM_LAG.set(sb.lag)
    m.PENDING.set(sb.pending)


def publish_incoming(count: int, oldest: float) -> None:
    m.INCOMING_OBJECTS.set(count)
    m.OLDEST_SECONDS.set(oldest)
