"""`make bench` = ``python -m bench``: the benchmarks of issues 7 and 15, then RESULTS.md and
the plot.

Phases, in order, on one local stack: Redis memory, baselines (HTTP ceiling, storage ceiling,
naive design), receiver ingest, overload, worker drain, end to end + memory soak, takeover
(kill -9 a worker), sweep. The default phases fit in under 10 minutes; sweep and the issue 15
phases have their own selections (bench/README.md). ``--quick`` is a smoke run of about two
minutes whose results go to bench/out/quick.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import (
    baselines,
    drain,
    e2e,
    forward,
    ingest,
    overload,
    redis_sizing,
    report,
    sweep,
    takeover,
)
from bench.harness import Bench
from bench.profile import DEFAULT, FULL, ORDER, QUICK, SELECTIONS, Profile

HERE = Path(__file__).resolve().parent


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


@contextmanager
def phase(results: dict[str, Any], name: str) -> Iterator[None]:
    """Records when phase ``name`` ran, how long, and the load average (1, 5, 15 min) around
    it: the machine is shared, and the report shows this beside the figures."""
    t0, start = time.monotonic(), os.getloadavg()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    yield
    results.setdefault("phase_runs", {})[name] = {
        "date": date,
        "seconds": time.monotonic() - t0,
        "load_start": [round(x, 2) for x in start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }


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
            with phase(results, "memory"):
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
            with phase(results, "baselines"):
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
            with phase(results, "ingest"):
                results["ingest"] = ingest.run(
                    bench, p.levels, p.receiver_requests, p.receiver_level_seconds, **p.receiver_env
                )
        if "overload" in phases:
            log(f"overload: {p.overload_rate:g} webhooks/s against a slowed, then stalled store")
            with phase(results, "overload"):
                results["overload"] = overload.run(
                    bench,
                    p.overload_rate,
                    p.overload_seconds,
                    p.overload_connections,
                    **p.receiver_env,
                )
        if phases & {"drain", "e2e"}:
            _drain_e2e(bench, p, phases, results)
        if "takeover" in phases:
            log(f"takeover: kill -9 a worker at {p.takeover_rate:g} webhooks/s")
            with phase(results, "takeover"):
                results["takeover"] = takeover.run(
                    bench,
                    p.takeover_rate,
                    p.takeover_seconds,
                    p.takeover_kill_after,
                    **p.worker_env,
                )
        if "forward" in phases:
            log(f"forward: {p.forward_webhooks} webhooks to a local destination, then limits")
            with phase(results, "forward"):
                results["forward"] = forward.run(
                    bench,
                    p.forward_webhooks,
                    p.forward_limit,
                    p.forward_rate,
                    p.forward_seconds,
                    p.forward_rate_limit,
                    **p.worker_env,
                )
        if "sweep" in phases:
            log(f"sweep of {p.sweep_segments} segments unknown to Redis")
            with phase(results, "sweep"):
                results["sweep"] = sweep.run(bench, p.sweep_segments, p.sweep_limit, **p.worker_env)
    results["duration_s"] = time.monotonic() - t0
    results["meta"]["load_end"] = os.getloadavg()[0]
    return results


def _drain_e2e(bench: Bench, p: Profile, phases: set[str], results: dict[str, Any]) -> None:
    """Drain, then end to end on the same receiver and (first) worker."""
    done_file = bench.dir / "done.txt"
    receiver = bench.receiver(**p.receiver_env)
    log(f"worker drain of {p.drain_webhooks} webhooks")
    with phase(results, "drain"):
        results["drain"], worker = drain.run(
            bench, receiver, p.drain_webhooks, p.drain_limit, done_file, **p.worker_env
        )
    if "e2e" not in phases:
        return
    with phase(results, "e2e"):
        if p.single_worker_seconds > 0:
            log(f"end to end at {p.e2e_rate:g}/s, one worker, {p.single_worker_seconds:g} s")
            results["e2e_single"] = e2e.run(
                bench, receiver, [worker], done_file, p.e2e_rate, p.single_worker_seconds
            )
        workers = [worker] + [
            bench.worker(done_file, **p.worker_env) for _ in range(p.e2e_workers - 1)
        ]
        log(
            f"end to end at {p.e2e_rate:g}/s, {len(workers)} workers,"
            f" {p.soak_seconds:g} s (memory soak)"
        )
        results["e2e"] = e2e.run(bench, receiver, workers, done_file, p.e2e_rate, p.soak_seconds)


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
    ap.add_argument("--note", help="a sentence for the report, e.g. what else ran on the machine")
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
        default=DEFAULT,
        help=f"comma separated subset of {','.join(ORDER)} (default {DEFAULT}; the others in "
        f"the selections of bench/README.md: {' and '.join(SELECTIONS)})",
    )
    ap.add_argument(
        "--report-only",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="re-render the report from results.json files (several: merged, each phase from "
        "the last file that has it)",
    )
    args = ap.parse_args(argv)
    out: Path = args.out or (HERE / "out" / "quick" if args.quick else HERE)
    if args.report_only:
        results = report.merge([json.loads(f.read_text()) for f in args.report_only])
    else:
        phases = {x.strip() for x in args.phases.split(",") if x.strip()}
        if unknown := phases - set(ORDER):
            raise SystemExit(f"python -m bench: unknown phases {sorted(unknown)}")
        profile = QUICK if args.quick else FULL
        changes: dict[str, Any] = {
            "receiver_env": _pairs(args.receiver_env),
            "worker_env": _pairs(args.worker_env),
        }
        if args.soak is not None:
            changes["soak_seconds"] = args.soak
        profile = Profile(**{**asdict(profile), **changes})
        results = run(profile, args.quick, phases)
        if args.note:
            results["meta"]["note"] = args.note
        name = "+".join(x for x in ORDER if x in phases)
        raw = (out if args.quick or args.out else HERE / "out" / name) / "results.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=1))
        if not (args.quick or args.out):
            # bench/RESULTS.md has every phase: each from the latest full run that measured it.
            runs = sorted((HERE / "out").glob("*/results.json"), key=lambda f: f.stat().st_mtime)
            runs = [f for f in runs if f.parent.name != "quick"]
            log("RESULTS.md from " + ", ".join(f.parent.name for f in runs))
            results = report.merge([json.loads(f.read_text()) for f in runs])
    md, png = report.write(results, out)
    log(f"wrote {md} and {png} ({results.get('duration_s', 0):.0f} s)")
    print(report.summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
