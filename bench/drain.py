"""Worker drain: a backlog of N webhooks built with no worker running, then one worker.

The backlog is sent at high concurrency, as it builds up in a flash sale, so its segments hold
what group commit makes of such a burst. Measured from the moment the worker is up until it has
processed all N: webhooks/s for one worker, and S3 requests per webhook (every API call the
worker made, counted in its process by ``bench.handler``: GETs, DELETEs, the sweeper's LISTs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, Server, total

PROCESSED = "shopipe_worker_records_total"


def processed(worker: Server) -> float:
    return total(worker.metrics(), PROCESSED, outcome="processed")


def run(
    bench: Bench, receiver: Server, n: int, limit: float, done_file: Path, **worker_settings: str
) -> tuple[dict[str, Any], Server]:
    """Returns the results and the worker, left running for the end-to-end phase."""
    before = receiver.metrics()
    fill = bench.load(receiver, concurrency=64, requests=n, seconds=limit)
    after = receiver.metrics()
    accepted = int(fill["ok"])
    segments = total(after, "shopipe_receiver_segments_total") - total(
        before, "shopipe_receiver_segments_total"
    )
    worker = bench.worker(done_file, **worker_settings)
    t0, cpu = time.monotonic(), worker.cpu()
    start = processed(worker)
    progress: list[tuple[float, float]] = [(0.0, start)]
    done = start
    # Bounded by ``limit``; polls the worker's own counter.
    while done < accepted and time.monotonic() - t0 < limit:
        time.sleep(0.25)
        done = processed(worker)
        progress.append((time.monotonic() - t0, done))
    elapsed, cpu = progress[-1][0], worker.cpu() - cpu
    metrics = worker.metrics()
    s3 = {
        k.split('"')[1]: v for k, v in metrics.items() if k.startswith("bench_s3_requests_total{")
    }
    s3_total = sum(s3.values())
    return {
        "webhooks": accepted,
        "fill_rps": fill["rps"],
        "segments": segments,
        "records_per_segment": accepted / segments if segments else float("nan"),
        "processed": done,
        "complete": done >= accepted,
        "elapsed_s": elapsed,
        "rate": (done - start) / elapsed if elapsed > 0 else 0.0,
        "s3_requests": s3,
        "s3_per_webhook": s3_total / done if done else float("nan"),
        "cpu_ms_per_webhook": cpu * 1000 / (done - start) if done > start else float("nan"),
        "worker_peak_rss_mb": worker.rss()[1] / 2**20,
        "progress": progress,
    }, worker
