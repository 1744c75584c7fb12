"""The bench's handler, loaded by the worker with ``SHOPIPE_HANDLERS=bench.handler``.

It handles every topic and records, for each webhook, when it was received and when its handler
ran (one line ``received_at done_at webhook_id record_id`` appended to ``$BENCH_DONE_FILE``):
end-to-end latency from receipt to handler done, exactly, rather than from histogram buckets;
the record id names the segment, which the takeover phase matches with stream entries.

``$BENCH_HANDLER_SECONDS`` (default 0) makes each handling wait that long, as a handler that
calls another API does: the takeover phase needs webhooks in progress when it kills a worker.

It also counts the worker's S3 requests (``bench_s3_requests_total{op}`` on the worker's
/metrics): the local store exposes no request metrics, and counting at the client is exact. The
count wraps botocore's one dispatch method in this process only; nothing outside the bench
loads this module.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import IO, Any

from botocore.client import BaseClient
from prometheus_client import Counter
from shopipe.metrics import REGISTRY
from shopipe_worker.events import Event
from shopipe_worker.registry import Context, Registry

HANDLED = Counter("bench_handled", "Records seen by the bench handler.", registry=REGISTRY)
S3_REQUESTS = Counter(
    "bench_s3_requests", "S3 API calls of this process.", ["op"], registry=REGISTRY
)

_file: IO[str] | None = None
_delay = 0.0
_original = BaseClient._make_api_call  # type: ignore[attr-defined]


def _counted(self: BaseClient, operation_name: str, api_params: Any) -> Any:
    S3_REQUESTS.labels(operation_name).inc()
    return _original(self, operation_name, api_params)


async def record(event: Event, _: Context) -> None:
    if _delay:
        await asyncio.sleep(_delay)  # the handler's own work, not a synchronisation
    HANDLED.inc()
    if _file is not None:
        line = f"{event.received_at:.6f} {time.time():.6f} {event.webhook_id} {event.record_id}\n"
        _file.write(line)


def register(registry: Registry) -> None:
    global _file, _delay
    _delay = float(os.environ.get("BENCH_HANDLER_SECONDS", "0"))
    BaseClient._make_api_call = _counted  # type: ignore[attr-defined]
    path = os.environ.get("BENCH_DONE_FILE")
    if path:
        _file = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)
    registry.add("*", record, name="bench.record")
