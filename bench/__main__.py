"""`make bench` = ``python -m bench``: every benchmark of issue 7, then RESULTS.md and the plot.

Phases, in order, on one local stack: baselines (HTTP ceiling, storage ceiling, naive design),
receiver ingest, worker drain, end to end + memory soak. The full run (default) fits in under
10 minutes; ``--quick`` is a smoke run of about two minutes whose results go to bench/out/quick.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import baselines, drain, e2e, forward, ingest, overload, redis_sizing, report, sweep
from bench.harness import Bench

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    # Up to 256 connections: a flash sale's burst, and where one receiver's group commit peaks
    # on two cores (closed loop: more connections, larger segments, until CPU runs out).
    levels: list[int] = field(default_factory=lambda: [1, 8, 32, 64, 128, 256])
    level_seconds: float = 3.0
    # The receiver's levels run longer: its p99 is a tail over segments, not requests (at 64
    # connections one slow PUT answers some 30 requests late, near 1% of a 3 s level's).
    receiver_level_seconds: float = 6.0
    # Per-level request caps (requests are signed before the clock starts, so they are bounded
    # by what each system can do in level_seconds, with room).
    bare_requests: int = 15000
    receiver_requests: int = 20000
    storage_requests: int = 3000
    naive_requests: int = 1500
    drain_webhooks: int = 6000
    drain_limit: float = 45.0
    e2e_rate: float = 200.0
    soak_seconds: float = 300.0
    # Workers of the end-to-end run: the chart's minimum (operator.minWorkers). A shorter run
    # with one worker comes first, for comparison (0 skips it).
    e2e_workers: int = 2
    single_worker_seconds: float = 60.0
    memory_webhooks: int = 100_000
    memory_bodies: int = 2_000
    memory_limit: float = 240.0
    # Overload: open-loop webhooks/s offered to a receiver whose store is slowed, then stalled
    # (the rate of issue 15's stall measurement); connections cover rate x deadline, with room.
    overload_rate: float = 100.0
    overload_seconds: float = 15.0
    overload_connections: int = 600
    # The sweep phase (not in the default phases: filling the bucket alone takes minutes).
    sweep_segments: int = 200_000
    sweep_limit: float = 900.0
    # The forward handler: a backlog drained to a local destination, then a steady load at
    # forward_rate for forward_seconds, then a route limited to forward_rate_limit per second.
    forward_webhooks: int = 4000
    forward_limit: float = 60.0
    forward_rate: float = 200.0
    forward_seconds: float = 20.0
    forward_rate_limit: float = 50.0
    # Extra SHOPIPE_* settings of the pipeline processes (defaults of shopipe.config otherwise).
    receiver_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)


FULL = Profile()
QUICK = Profile(
    levels=[1, 16, 64],
    level_seconds=2.0,
    receiver_level_seconds=2.0,
    bare_requests=8000,
    receiver_requests=4000,
    storage_requests=1000,
    naive_requests=300,
    drain_webhooks=1500,
    drain_limit=30.0,
    soak_seconds=30.0,
    single_worker_seconds=0.0,
    memory_webhooks=5_000,
    memory_bodies=500,
    memory_limit=60.0,
    overload_seconds=6.0,
    sweep_segments=10_000,
    sweep_limit=300.0,
    forward_webhooks=1000,
    forward_seconds=8.0,
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = 0.0
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(p: Profile, quick: bool, phases: set[str]) -> dict[str, Any]:
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "quick": quick,
            "machine": machine(),
            "profile": asdict(p),
            "load_start": os.getloadavg()[0],
        },
    }
    load = {"seconds": p.level_seconds}
    with Bench() as bench:
        log(f"stack up in {bench.stack.timings.get('total', 0):.1f} s ({bench.dir})")
        if "memory" in phases:
            # First, on an empty Redis, with its own receiver and workers, stopped after it.
            log(f"Redis memory: {p.memory_webhooks} webhooks through the pipeline")
            results["memory"] = redis_sizing.run(
                bench,
                p.memory_webhooks,
                p.memory_bodies,
                p.memory_limit,
                bench.dir / "done-memory.txt",
                **p.worker_env,
            )
        if "baselines" in phases:
            base: dict[str, Any] = {}
            log("HTTP ceiling: bare Starlette")
            base["bare"] = baselines.http_levels(
                bench, "bare", p.levels, requests=p.bare_requests, **load
            )
            log("storage ceiling: boto3 PUT per webhook")
            base["storage"] = baselines.storage_levels(
                bench, p.levels, p.storage_requests, p.level_seconds
            )
            log("naive design: sync handler, client per request")
            base["naive"] = baselines.http_levels(
                bench, "naive", p.levels, requests=p.naive_requests, **load
            )
            results["baselines"] = base
        if "ingest" in phases:
            log("receiver ingest")
            results["ingest"] = ingest.run(
                bench, p.levels, p.receiver_requests, p.receiver_level_seconds, **p.receiver_env
            )
        if "overload" in phases:
            log(f"overload: {p.overload_rate:g} webhooks/s against a slowed, then stalled store")
            results["overload"] = overload.run(
                bench,
                p.overload_rate,
                p.overload_seconds,
                p.overload_connections,
                **p.receiver_env,
            )
        if phases & {"drain", "e2e"}:
            done_file = bench.dir / "done.txt"
            receiver = bench.receiver(**p.receiver_env)
            log(f"worker drain of {p.drain_webhooks} webhooks")
            results["drain"], worker = drain.run(
                bench, receiver, p.drain_webhooks, p.drain_limit, done_file, **p.worker_env
            )
            if "e2e" in phases and p.single_worker_seconds > 0:
                log(f"end to end at {p.e2e_rate:g}/s, one worker, {p.single_worker_seconds:g} s")
                results["e2e_single"] = e2e.run(
                    bench, receiver, [worker], done_file, p.e2e_rate, p.single_worker_seconds
                )
            if "e2e" in phases:
                workers = [worker] + [
                    bench.worker(done_file, **p.worker_env) for _ in range(p.e2e_workers - 1)
                ]
                log(
                    f"end to end at {p.e2e_rate:g}/s, {len(workers)} workers,"
                    f" {p.soak_seconds:g} s (memory soak)"
                )
                results["e2e"] = e2e.run(
                    bench, receiver, workers, done_file, p.e2e_rate, p.soak_seconds
                )
        if "sweep" in phases:
            log(f"sweep of {p.sweep_segments} segments unknown to Redis")
            results["sweep"] = sweep.run(bench, p.sweep_segments, p.sweep_limit, **p.worker_env)
        if "forward" in phases:
            log(f"forward: {p.forward_webhooks} webhooks to a local destination, then limits")
            results["forward"] = forward.run(
                bench,
                p.forward_webhooks,
                p.forward_limit,
                p.forward_rate,
                p.forward_seconds,
                p.forward_rate_limit,
                **p.worker_env,
            )
    results["duration_s"] = time.monotonic() - t0
    results["meta"]["load_end"] = os.getloadavg()[0]
    return results


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("SHOPIPE_"):
            raise SystemExit(f"python -m bench: expected SHOPIPE_NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run with small counts (~2 min)")
    ap.add_argument("--out", type=Path, help="where RESULTS.md, results.png and results.json go")
    ap.add_argument("--soak", type=float, help="seconds of the end-to-end soak")
    ap.add_argument(
        "--receiver-env",
        action="append",
        default=[],
        metavar="SHOPIPE_X=V",
        help="extra receiver setting (repeatable), e.g. SHOPIPE_SEGMENT_MAX_WAIT_SECONDS=0.02",
    )
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="SHOPIPE_X=V",
        help="extra worker setting (repeatable), e.g. SHOPIPE_CONCURRENCY=16",
    )
    ap.add_argument(
        "--phases",
        default="baselines,ingest,drain,e2e,memory,overload,forward",
        help="comma separated subset of baselines,ingest,drain,e2e,memory,overload,forward,sweep "
        "(sweep: not by default)",
    )
    ap.add_argument(
        "--report-only", type=Path, metavar="JSON", help="re-render the report from a results.json"
    )
    args = ap.parse_args(argv)
    out: Path = args.out or (HERE / "out" / "quick" if args.quick else HERE)
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        profile = QUICK if args.quick else FULL
        changes: dict[str, Any] = {
            "receiver_env": _pairs(args.receiver_env),
            "worker_env": _pairs(args.worker_env),
        }
        if args.soak is not None:
            changes["soak_seconds"] = args.soak
        profile = Profile(**{**asdict(profile), **changes})
        phases = {x.strip() for x in args.phases.split(",") if x.strip()}
        results = run(profile, args.quick, phases)
        raw = (out if args.quick or args.out else HERE / "out") / "results.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=1))
    md, png = report.write(results, out)
    log(f"wrote {md} and {png} ({results.get('duration_s', 0):.0f} s)")
    print(report.summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
