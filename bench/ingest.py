"""Receiver ingest: throughput, ack latency and PUTs per webhook at rising concurrency.

The receiver writes to a bucket and stream of its own (``bench-ingest``) that no worker reads,
so this phase's segments cannot leak into the drain and end-to-end phases. PUTs per webhook come
from the receiver's own metrics (segments written / webhooks accepted, per level).
"""

from __future__ import annotations

from typing import Any

from bench.harness import Bench, total

BUCKET = "bench-ingest"
STREAM = "bench:ingest"


def run(
    bench: Bench, levels: list[int], requests: int, seconds: float, **settings: str
) -> dict[str, Any]:
    bench.create_bucket(BUCKET)
    receiver = bench.receiver(**settings, SHOPIPE_S3_BUCKET=BUCKET, SHOPIPE_STREAM=STREAM)
    try:
        bench.load(receiver, concurrency=4, requests=100, seconds=5.0)  # warm-up, not recorded
        rows = []
        for c in levels:
            before, cpu = receiver.metrics(), receiver.cpu()
            row = bench.load(receiver, concurrency=c, requests=requests, seconds=seconds)
            after, cpu = receiver.metrics(), receiver.cpu() - cpu
            accepted = total(after, "shopipe_receiver_requests_total", outcome="accepted") - total(
                before, "shopipe_receiver_requests_total", outcome="accepted"
            )
            segments = total(after, "shopipe_receiver_segments_total") - total(
                before, "shopipe_receiver_segments_total"
            )
            row["accepted"] = accepted
            row["segments"] = segments
            row["puts_per_webhook"] = segments / accepted if accepted else float("nan")
            row["rss_mb"] = receiver.rss()[0] / 2**20
            # CPU per webhook moves less than throughput on a shared machine.
            row["cpu_ms_per_webhook"] = cpu * 1000 / accepted if accepted else float("nan")
            rows.append(row)
        peak = receiver.rss()[1]
    finally:
        bench.stop_server(receiver)
    return {"levels": rows, "receiver_peak_rss_mb": peak / 2**20}
