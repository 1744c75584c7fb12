"""Takeover (issue 15 §4): a worker killed with SIGKILL under load; how soon another worker has
done the webhooks it held.

A receiver and two workers (the chart's minimum) on a stream, group, bucket and key prefix of
their own, default settings (``SHOPIPE_CLAIM_IDLE_SECONDS`` 5 s: live workers refresh the idle
time of what they hold, so a dead one's entries are claimable soon). Each handling takes 100 ms,
as a handler calling another API does: a worker killed with nothing in progress would only
leave entries whose webhooks it had already done. An open-loop load runs throughout; once the
victim has processed a share of it and holds stream entries, it gets ``kill -9``. Its pending
entries right after the kill are what it held: each names a segment and its record count, so
the held record ids are ``<segment>:<index>``. ``bench.handler`` writes each record id beside
its receipt and done times, so the figure is exact: receipt → first handler done of every held
webhook (one never handled counts as infinitely late). Goal: p99 ≤ 10 s.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis
from shopipe import segment
from shopipe.stream import as_str
from shopipe_devstack.redis import client

from bench.drain import processed
from bench.harness import Bench, wait_for
from bench.stats import summarise

BUCKET = "bench-takeover"
PREFIX = "btakeover"
STREAM = f"{PREFIX}:webhooks"
GROUP = f"{PREFIX}-workers"
GOAL_S = 10.0
GRACE = 60.0  # seconds after the load for the survivor to finish what was acknowledged
HANDLER_SECONDS = 0.1


def held(r: redis.Redis, consumer: str) -> list[str]:
    """Record ids of the stream entries pending for ``consumer``."""
    rows = r.xpending_range(STREAM, GROUP, "-", "+", 10_000, consumername=consumer)
    out: list[str] = []
    for row in rows:
        entry = row["message_id"]
        for _, fields in r.xrange(STREAM, entry, entry) or []:
            f = {as_str(k): as_str(v) for k, v in (fields or {}).items()}
            name = segment.name_of(f["key"])
            out += [segment.record_id(name, i) for i in range(int(f.get("n", "1")))]
    return out


def handled(done_file: Path, since: float) -> dict[str, tuple[float, float]]:
    """Record id → (received, done) of its first handling, for webhooks received since
    ``since``; a torn last line of the killed worker is skipped."""
    first: dict[str, tuple[float, float]] = {}
    for line in done_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        received, done, rid = float(parts[0]), float(parts[1]), parts[3]
        if received >= since and (rid not in first or done < first[rid][1]):
            first[rid] = (received, done)
    return first


def run(
    bench: Bench, rate: float, seconds: float, kill_after: float, **worker_env: str
) -> dict[str, Any]:
    bench.create_bucket(BUCKET)
    done_file = bench.dir / "done-takeover.txt"
    done_file.touch()
    common = {"SHOPIPE_S3_BUCKET": BUCKET, "SHOPIPE_STREAM": STREAM}
    receiver = bench.receiver(**common)
    env = common | {"SHOPIPE_KEY_PREFIX": PREFIX, "SHOPIPE_CONSUMER_GROUP": GROUP} | worker_env
    env["BENCH_HANDLER_SECONDS"] = str(HANDLER_SECONDS)  # read by bench.handler
    victim = bench.worker(done_file, **env)
    survivor = bench.worker(done_file, **env)
    spec = {"concurrency": 64, "rate": rate, "requests": int(rate * seconds) + 1}
    load: dict[str, Any] = {}
    loader = threading.Thread(
        target=lambda: load.update(bench.load(receiver, **spec, seconds=seconds)), daemon=True
    )
    since = time.time()
    loader.start()
    try:
        with client(bench.stack.current_master(), bench.info.redis_password, timeout=10.0) as r:
            share = rate * kill_after / 2  # half the load goes to each worker
            wait_for("victim under load", lambda: processed(victim) >= share, seconds, 0.2)
            # Polled often: a worker holds a segment for milliseconds at this rate.
            wait_for("victim holding entries", lambda: held(r, victim.name), seconds, 0.005)
            bench.stack.table.signal(victim.name, signal.SIGKILL)
            killed = time.time()
            wait_for("victim dead", lambda: not bench.stack.table.alive(victim.name), 10.0)
            ids = held(r, victim.name)
            wait_for("its entries claimed", lambda: not held(r, victim.name), GRACE, 0.1)
            claimed_s = time.time() - killed
    finally:
        loader.join(seconds + 120.0)
    ok = int(load.get("ok", 0))
    deadline = time.monotonic() + GRACE
    # Bounded by GRACE; the done file is the handler's own record.
    while len(handled(done_file, since)) < ok and time.monotonic() < deadline:
        time.sleep(0.5)
    first = handled(done_file, since)
    lat = [first[i][1] - first[i][0] if i in first else math.inf for i in ids]
    after_kill = [first[i][1] - killed for i in ids if i in first]
    bench.stop_server(survivor)
    bench.stop_server(victim)
    bench.stop_server(receiver)
    return {
        "rate": rate,
        "seconds": seconds,
        "handler_ms": HANDLER_SECONDS * 1000,
        "killed_at_s": killed - since,
        "held_segments": len({segment.parse_record_id(i)[0] for i in ids}),
        "held_webhooks": len(ids),
        "held_not_handled": sum(1 for x in lat if math.isinf(x)),
        "held_receipt_to_done": summarise(lat),
        "kill_to_done_max_s": max(after_kill, default=math.nan),
        "claimed_after_s": claimed_s,
        "acknowledged": ok,
        "handled": len(first),
        "all_receipt_to_done": summarise([d - rcv for rcv, d in first.values()]),
    }


# --- report (RESULTS.md) -------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    t = results.get("takeover")
    if not t:
        return []
    p99 = float(t["held_receipt_to_done"]["p99_ms"]) / 1000
    ok = p99 <= GOAL_S and t["held_webhooks"] > 0
    note = f"{t['held_webhooks']} webhooks held by the killed worker"
    return [
        {
            "name": "kill -9 drill: receipt-to-done p99 of the killed worker's webhooks",
            "measured": p99,
            "op": "<=",
            "goal": GOAL_S,
            "unit": "s",
            "ok": ok,
            "note": note,
        }
    ]


def markdown(results: dict[str, Any]) -> list[str]:
    t = results.get("takeover")
    if not t:
        return []
    h, a = t["held_receipt_to_done"], t["all_receipt_to_done"]

    def s(ms: float) -> str:
        return "-" if math.isnan(ms) else "∞" if math.isinf(ms) else f"{ms / 1000:.2f}"

    return [
        "## Takeover: a worker killed under load (issue 15 §4)",
        "",
        f"Open loop at {t['rate']:g} webhooks/s for {t['seconds']:g} s through a receiver and "
        f"two workers (default settings: claim idle 5 s; each handling takes "
        f"{t.get('handler_ms', 0):.0f} ms); one worker got `kill -9` "
        f"{t['killed_at_s']:.1f} s into the load, holding {t['held_segments']} segments "
        f"({t['held_webhooks']} webhooks, {t['held_not_handled']} never handled). Its entries "
        f"were all claimed {t['claimed_after_s']:.2f} s after the kill; the last held webhook "
        f"was done {t['kill_to_done_max_s']:.2f} s after it. {t['handled']} of "
        f"{t['acknowledged']} acknowledged webhooks handled.",
        "",
        "| receipt → handler done | n | p50 s | p99 s | max s |",
        "|---|---|---|---|---|",
        f"| webhooks the killed worker held | {h['n']:.0f} | {s(h['p50_ms'])} | {s(h['p99_ms'])} "
        f"| {s(h['max_ms'])} |",
        f"| every webhook of the run | {a['n']:.0f} | {s(a['p50_ms'])} | {s(a['p99_ms'])} "
        f"| {s(a['max_ms'])} |",
        "",
    ]
