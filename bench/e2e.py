"""End to end: a steady open-loop load (default 200 webhooks/s) through the receiver and the
workers (two by default: the chart's minimum); latency from receipt (the receiver's
``received_at``) to handler done (``bench.handler``).

The same run is the memory soak: ``bench.memory.Sampler`` watches every process meanwhile.
Only webhooks received after the load started count, so the drain phase's backlog cannot blur
the figure; a webhook handled twice counts once, at its first handling. One acknowledged but
not handled within GRACE seconds of the end of the load counts as infinitely late.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.drain import processed
from bench.harness import Bench, Server, total
from bench.memory import Sampler
from bench.stats import curve, summarise

GRACE = 15.0  # seconds after the load for the worker to finish what was acknowledged
SEGMENTS = "shopipe_receiver_segments_total"


def latencies(done_file: Path, since: float) -> list[float]:
    """Receipt-to-done seconds of webhooks received at or after ``since`` (epoch seconds)."""
    first: dict[str, float] = {}
    for line in done_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue  # a torn last line of a killed worker
        received, done, webhook_id = float(parts[0]), float(parts[1]), parts[2]
        if received >= since and webhook_id not in first:
            first[webhook_id] = done - received
    return list(first.values())


def run(
    bench: Bench,
    receiver: Server,
    workers: list[Server],
    done_file: Path,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    procs = {"receiver": receiver} | {
        "worker" if i == 0 else f"worker {i + 1}": w for i, w in enumerate(workers)
    }

    def handled() -> float:
        return sum(processed(w) for w in workers)

    before = handled()
    segments = total(receiver.metrics(), SEGMENTS)
    cpu = {k: p.cpu() for k, p in procs.items()}
    since, t0 = time.time(), time.monotonic()
    with Sampler(procs) as sampler:
        load = bench.load(
            receiver, concurrency=64, rate=rate, requests=int(rate * seconds) + 1, seconds=seconds
        )
    segments = total(receiver.metrics(), SEGMENTS) - segments
    wall = time.monotonic() - t0
    cpu = {k: p.cpu() - cpu[k] for k, p in procs.items()}
    # Let the workers finish what was acknowledged (bounded): the tail belongs in the figure.
    deadline = time.monotonic() + GRACE
    while handled() - before < load["ok"] and time.monotonic() < deadline:
        time.sleep(0.2)
    lat = latencies(done_file, since)
    # Acknowledged but not handled in time counts as an infinite latency, so a worker that
    # falls behind cannot flatter its percentiles by leaving the slowest out.
    missing = max(0, int(load["ok"]) - len(lat))
    return {
        "rate": rate,
        "seconds": seconds,
        "workers": len(workers),
        "sent": load["sent"],
        "ok": load["ok"],
        "status": load["status"],
        "errors": load["errors"],
        "achieved_rps": load["rps"],
        "ack": load["latency"],
        "handled": len(lat),
        "not_handled": missing,
        "cpu_pct": {k: v * 100 / wall for k, v in cpu.items()},  # of one core, during the load
        "records_per_segment": load["ok"] / segments if segments else math.nan,
        "end_to_end": summarise(lat + [math.inf] * missing),
        "end_to_end_handled": summarise(lat),
        "end_to_end_curve": curve(lat),
        "memory": sampler.result(),
    }
