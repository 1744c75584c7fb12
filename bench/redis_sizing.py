"""Redis memory per webhook: N webhooks through the pipeline, ``INFO memory`` before and after.

A receiver and a worker with the default settings (done-markers for 24 h, state copies without
bodies) take N webhooks sent at 64 connections; once the worker has processed them all, the
master's ``used_memory`` has grown by what N webhooks leave behind for the TTLs. ``MEMORY
USAGE`` of sampled keys splits it by kind: done-markers, state copies, the stream. A second,
smaller run with ``SHOPIPE_STATE_BODIES=true`` (its own key prefix) gives a state copy with its
body, which the first run would not fit in the dev stack's maxmemory at N = 100k.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis
from shopipe.config import CommonSettings
from shopipe_devstack.redis import client

from bench.drain import processed
from bench.harness import Bench, Server

SAMPLES = 300
STREAM = CommonSettings.stream  # the default; the bench does not change it


def _scan(r: redis.Redis, pattern: str, limit: int = 1_000_000) -> list[str]:
    """Keys matching ``pattern``, at most ``limit`` (bounded: SCAN ends when the cursor does)."""
    out: list[str] = []
    for key in r.scan_iter(match=pattern, count=1000):
        out.append(str(key))
        if len(out) >= limit:
            break
    return out


def _mean_usage(r: redis.Redis, keys: list[str]) -> float:
    sample = keys[:: max(1, len(keys) // SAMPLES)][:SAMPLES]
    sizes = [r.memory_usage(k) or 0 for k in sample]
    return sum(sizes) / len(sizes) if sizes else 0.0


def _kinds(r: redis.Redis, prefix: str) -> dict[str, Any]:
    done = _scan(r, f"{prefix}:done:*")
    state = _scan(r, f"{prefix}:state:*")
    return {
        "done_markers": len(done),
        "done_marker_bytes": _mean_usage(r, done),
        "state_copies": len(state),
        "state_copy_bytes": _mean_usage(r, state),
    }


def _through(bench: Bench, receiver: Server, worker: Server, n: int, limit: float) -> int:
    """Send ``n`` webhooks and wait until ``worker`` has processed them; the accepted count."""
    start = processed(worker)
    fill = bench.load(receiver, concurrency=64, requests=n, seconds=limit)
    accepted = int(fill["ok"])
    deadline = time.monotonic() + limit
    # Bounded by ``limit``; polls the worker's own counter.
    while processed(worker) - start < accepted and time.monotonic() < deadline:
        time.sleep(0.5)
    return accepted


def run(
    bench: Bench, n: int, n_bodies: int, limit: float, done_file: Path, **worker_env: str
) -> dict[str, Any]:
    info = bench.info
    receiver = bench.receiver()
    worker = bench.worker(done_file, **worker_env)
    with client(bench.stack.current_master(), info.redis_password, timeout=30.0) as r:
        r.memory_purge()
        before = r.info("memory")
        accepted = _through(bench, receiver, worker, n, limit)
        done = processed(worker)
        after = r.info("memory")
        kinds = _kinds(r, "shopipe")
        stream = r.memory_usage(STREAM, samples=0) or 0
        entries = int(r.xlen(STREAM))
        bench.stop_server(worker)
        bodies = bench.worker(
            done_file, **worker_env, SHOPIPE_STATE_BODIES="true", SHOPIPE_KEY_PREFIX="bodies"
        )
        _through(bench, receiver, bodies, n_bodies, limit)
        with_bodies = _kinds(r, "bodies")
        maxmemory = int(r.config_get("maxmemory")["maxmemory"])
    bench.stop_server(bodies)
    bench.stop_server(receiver)
    grown = int(after["used_memory"]) - int(before["used_memory"])
    return {
        "asked": n,
        "webhooks": accepted,
        "processed": done,
        "used_before": int(before["used_memory"]),
        "used_after": int(after["used_memory"]),
        "bytes_per_webhook": grown / accepted if accepted else float("nan"),
        "fragmentation_after": float(after.get("mem_fragmentation_ratio", 0.0)),
        "maxmemory": maxmemory,
        "stream_entries": entries,
        "stream_bytes_per_entry": stream / entries if entries else 0.0,
        **kinds,
        "bodies_webhooks": n_bodies,
        "state_copy_with_body_bytes": with_bodies["state_copy_bytes"],
    }


def markdown(m: dict[str, Any]) -> list[str]:
    """The RESULTS.md section: measured bytes, and what they make per day."""
    per = m["bytes_per_webhook"]
    day = 86_400  # webhooks in a day at 1 webhook/s, all alive with the default 24 h TTLs
    mb = 2**20
    # With bodies, each webhook that leaves a state copy leaves its body too.
    copies = m["state_copies"] / m["webhooks"] if m["webhooks"] else 0.0
    bodies = per + (m["state_copy_with_body_bytes"] - m["state_copy_bytes"]) * copies
    rows = [
        ["whole pipeline, per webhook (`used_memory` growth / webhooks)", f"{per:.0f}"],
        ["done-marker (2 per webhook: delivery and event)", f"{m['done_marker_bytes']:.0f}"],
        ["state copy without body (default)", f"{m['state_copy_bytes']:.0f}"],
        [
            "state copy with body (`SHOPIPE_STATE_BODIES=true`)",
            f"{m['state_copy_with_body_bytes']:.0f}",
        ],
        ["stream entry (one per segment, until trimmed)", f"{m['stream_bytes_per_entry']:.0f}"],
    ]
    return [
        "## Redis memory",
        "",
        f"{m['webhooks']} webhooks (of {m.get('asked', m['webhooks'])} asked, in the time "
        "limit) through a receiver and a worker with the default settings "
        f"({m['processed']:g} processed): `used_memory` {m['used_before'] / mb:.1f} → "
        f"{m['used_after'] / mb:.1f} MB (fragmentation {m['fragmentation_after']:.2f}, maxmemory "
        f"{m['maxmemory'] / mb:.0f} MB); {m['done_markers']} done-markers, {m['state_copies']} "
        f"state copies, {m['stream_entries']} stream entries. Bodies: a second run of "
        f"{m['bodies_webhooks']} webhooks with `SHOPIPE_STATE_BODIES=true`.",
        "",
        "| what | bytes |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
        f"Per day at 1 webhook/s on average (steady state with the 24 h TTLs): "
        f"{per * day / mb:.0f} MB; with state bodies: {bodies * day / mb:.0f} MB "
        f"({bodies:.0f} B per webhook).",
        "",
    ]
