"""Sweep: the sweeper at scale (issue 15 §3).

N small segments (one webhook each) are written straight into a bucket of their own, an hour
old, with Redis knowing nothing of them: a stream, group and key prefix of their own, empty, as
after a Redis that lost its data. Then workers start, and their sweeper must find them all
and announce them again, page by page, while they process them.

Two workers (the chart's minimum) take turns at sweeping (the lock) and process. Measured
from their start: the time until the sweeper had announced them all (sweep time) and until all
were processed, the LIST calls (counted in the workers by ``bench.handler``) and the highest
peak RSS of a worker (goal: under 150 MB; the sweeper used to list the
whole prefix first, ~408 B per object). A round fills the stream's backlog up to 10,000
entries, and runs once it is under 5,000: the sweep goes at the pace of processing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from shopipe import segment

from bench.harness import Bench, total

BUCKET = "bench-sweep"
PREFIX = "bsweep"
# A round every 2 s: the default (30 s) would leave the worker idle between rounds of 10,000.
INTERVAL = "2"
THREADS = 32
WORKERS = 2
RSS_GOAL_MB = 150.0


def fill(bench: Bench, n: int) -> float:
    """Write ``n`` one-record segments an hour old, one millisecond apart; seconds taken."""
    info = bench.info
    s3 = boto3.client(
        "s3",
        endpoint_url=info.s3_endpoint,
        aws_access_key_id=info.s3_access_key,
        aws_secret_access_key=info.s3_secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=THREADS,
        ),
    )
    base = time.time() - 3600

    def put(i: int) -> None:
        name = segment.new_name(base + i / 1000)
        headers = {
            "X-Shopify-Topic": "bench/sweep",
            "X-Shopify-Shop-Domain": "bench.myshopify.com",
            "X-Shopify-Webhook-Id": f"sweep-{i}",
        }
        record = segment.Record(segment.record_id(name, 0), base, headers, b"{}")
        data = segment.encode([record])
        s3.put_object(Bucket=BUCKET, Key=segment.incoming_key(name), Body=data)

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            for _ in pool.map(put, range(n)):
                pass
    finally:
        s3.close()
    return time.monotonic() - t0


def run(bench: Bench, n: int, limit: float, **worker_settings: str) -> dict[str, Any]:
    bench.create_bucket(BUCKET)
    fill_s = fill(bench, n)
    env = {
        "SHOPIPE_S3_BUCKET": BUCKET,
        "SHOPIPE_KEY_PREFIX": PREFIX,
        "SHOPIPE_STREAM": f"{PREFIX}:webhooks",
        "SHOPIPE_CONSUMER_GROUP": f"{PREFIX}-workers",
        "SHOPIPE_SWEEP_INTERVAL_SECONDS": INTERVAL,
        **worker_settings,
    }
    # The chart's minimum of workers: each one sweeps in turn (the lock) and processes.
    servers = [bench.worker(None, **env) for _ in range(WORKERS)]
    t0 = time.monotonic()
    swept_s = None
    processed = announced = 0.0
    progress: list[tuple[float, float, float]] = []

    def sum_of(name: str, **labels: str) -> float:
        return sum(total(w.metrics(), name, **labels) for w in servers)

    try:
        # Bounded by ``limit``; polls the workers' own counters.
        while processed < n and time.monotonic() - t0 < limit:
            time.sleep(0.5)
            processed = sum_of("shopipe_worker_records_total", outcome="processed")
            announced = sum_of("shopipe_worker_sweeper_recovered_total")
            elapsed = time.monotonic() - t0
            progress.append((elapsed, announced, processed))
            if swept_s is None and announced >= n:
                swept_s = elapsed
        list_calls = sum_of("bench_s3_requests_total", op="ListObjectsV2")
        peak_rss = max(w.rss()[1] for w in servers)
        alive = all(bench.stack.table.alive(w.name) for w in servers)
        log_tail = bench.log_of(servers[0]).read_text(errors="replace").splitlines()[-20:]
    finally:
        for w in servers:
            bench.stop_server(w)
    return {
        "segments": n,
        "workers": WORKERS,
        "fill_s": fill_s,
        "sweep_interval_s": float(INTERVAL),
        "sweep_s": swept_s,
        "elapsed_s": progress[-1][0] if progress else 0.0,
        "announced": announced,
        "processed": processed,
        "complete": processed >= n,
        "list_calls": list_calls,
        "worker_peak_rss_mb": peak_rss / 2**20,
        "worker_alive_at_end": alive,
        "worker_log_tail": [] if processed >= n else log_tail,
        "progress": progress,
    }


def section(sweep: dict[str, Any]) -> list[str]:
    """The RESULTS.md lines of this phase."""

    def f(x: Any, digits: int = 1) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    rss = sweep["worker_peak_rss_mb"]
    done = "yes" if sweep["complete"] else f"no ({sweep['processed']:g})"
    return [
        "## Sweep (issue 15 §3)",
        "",
        f"{sweep['segments']:,} one-webhook segments an hour old in a bucket of their own, Redis"
        f" knowing nothing of them; {sweep.get('workers', 1)} workers, sweep interval"
        f" {sweep['sweep_interval_s']:g} s. Sweep time: until the sweeper had announced them"
        " all; processed: until the workers had processed them all.",
        "",
        "| segments | sweep s | processed s | all processed | LIST calls | worker peak RSS MB"
        " (goal < 150) |",
        "|---|---|---|---|---|---|",
        f"| {sweep['segments']:,} | {f(sweep['sweep_s'])} | {f(sweep['elapsed_s'])} |"
        f" {done} |"
        f" {sweep['list_calls']:g} | {f(rss)} ({'pass' if rss < RSS_GOAL_MB else 'FAIL'}) |",
        "",
    ]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15 §3's goal: a worker's peak RSS under 150 MB, with every segment processed."""
    sw = results.get("sweep")
    if not sw:
        return []
    rss = float(sw["worker_peak_rss_mb"])
    done = "all processed" if sw["complete"] else f"only {sw['processed']:g} processed"
    return [
        {
            "name": "sweep: worker peak RSS, every segment processed",
            "measured": rss,
            "op": "<",
            "goal": RSS_GOAL_MB,
            "unit": "MB",
            "ok": rss < RSS_GOAL_MB and bool(sw["complete"]),
            "note": f"{sw['segments']:,} segments unknown to Redis, {done}",
        }
    ]
