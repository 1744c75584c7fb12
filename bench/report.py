"""RESULTS.md and results.png from one run's results (a plain dict, also saved as JSON), or from
several runs merged: each phase keeps the date and load average of the run that measured it.

The tables are bench.tables' and each phase module's, the targets bench.targets', the plot
bench.plot's; this module puts them in order and writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import forward, overload, plot, redis_sizing, sweep, tables, takeover
from bench.tables import fmt
from bench.targets import targets

# Result keys of each phase (``e2e_single`` is the one-worker comparison run by phase e2e).
PHASES = {
    "baselines": ("baselines",),
    "ingest": ("ingest",),
    "drain": ("drain",),
    "e2e": ("e2e", "e2e_single"),
    "memory": ("memory",),
    "overload": ("overload",),
    "takeover": ("takeover",),
    "forward": ("forward",),
    "sweep": ("sweep",),
}


def _settings(profile: dict[str, Any]) -> str:
    changed = [
        f"{who} `{k}={v}`"
        for who in ("receiver", "worker")
        for k, v in sorted(profile.get(f"{who}_env", {}).items())
    ]
    return "Settings: the defaults of `shopipe.config`" + (
        ", except " + ", ".join(changed) + "." if changed else "."
    )


def phase_runs(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """When and under what load each phase present ran: its own record, else the run's."""
    meta = results.get("meta", {})
    whole = {
        "date": meta.get("date", "?"),
        "seconds": results.get("duration_s"),
        "load_start": meta.get("load_start"),
        "load_end": meta.get("load_end"),
    }
    own = results.get("phase_runs", {})
    return {
        phase: own.get(phase, whole)
        for phase, keys in PHASES.items()
        if any(k in results for k in keys)
    }


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict of several runs (each phase from the last run that has it)."""
    out: dict[str, Any] = {"meta": dict(runs[0].get("meta", {})), "phase_runs": {}}
    for run in runs:
        out["phase_runs"] |= phase_runs(run)
        for keys in PHASES.values():
            out |= {k: run[k] for k in keys if k in run}
    notes = [r.get("meta", {}).get("note") for r in runs]
    out["meta"]["note"] = " ".join(dict.fromkeys(n for n in notes if n))  # each once
    out["meta"]["merged"] = len(runs)
    out["meta"]["quick"] = any(r.get("meta", {}).get("quick") for r in runs)
    out["duration_s"] = sum(float(r.get("duration_s", 0.0)) for r in runs)
    return out


def _load(x: Any) -> str:
    """A load average: (1, 5, 15 min) as "a / b / c", an older run's single 1-min figure as is."""
    if isinstance(x, list | tuple):
        return " / ".join(f"{v:.2f}" for v in x)
    return fmt(x, 2)


def _runs(results: dict[str, Any]) -> list[str]:
    rows = [
        [
            p,
            str(r.get("date", "?")),
            fmt(r.get("seconds"), 0),
            _load(r.get("load_start")),
            _load(r.get("load_end")),
        ]
        for p, r in phase_runs(results).items()
    ]
    head = ["phase", "run at", "seconds", "load average at start (1 / 5 / 15 min)", "at end"]
    return tables.table(head, rows)


def markdown(results: dict[str, Any], plot_name: str = "results.png") -> str:
    meta = results.get("meta", {})
    lines = ["# shopipe benchmarks", ""]
    if meta.get("quick"):
        lines += ["**Quick smoke run** (small counts): not the headline figures.", ""]
    if meta.get("merged", 1) > 1:
        how = (
            f"Merged from {meta['merged']} runs of `python -m bench --phases ...` (the table "
            "below: each phase with its date and the machine's load average)"
        )
    else:
        took = fmt(results.get("duration_s"), 0)
        how = f"Run {meta.get('date', '?')} in {took} s with `python -m bench`"
    lines += [
        f"{how}, on {meta.get('machine', '?')}. Everything on loopback against the local stack "
        "(SeaweedFS S3, Redis with Sentinel) started by the bench; every ratio divides two "
        "figures of the same run. The machine is shared: other work on it shows in the load "
        "average.",
        "",
        *_runs(results),
        *([meta["note"], ""] if meta.get("note") else []),
        _settings(meta.get("profile", {})),
        "",
        "## Targets",
        "",
    ]
    rows = []
    for t in targets(results):
        unit = t["unit"]
        measured = fmt(t["measured"], 3 if unit == "" else 1) + (unit if unit else "")
        goal = f"{t['op']} {t['goal']:g}{unit}"
        rows.append([t["name"], measured, goal, "pass" if t["ok"] else "FAIL", t["note"]])
    lines += tables.table(["target", "measured", "goal", "result", "note"], rows)
    lines += tables.ingest(results) + tables.drain(results)
    if results.get("memory"):
        lines += redis_sizing.markdown(results["memory"])
    lines += tables.e2e(results)
    lines += overload.markdown(results)
    lines += takeover.markdown(results)
    if results.get("sweep"):
        lines += sweep.section(results["sweep"])
    if results.get("forward"):
        lines += forward.section(results["forward"])
    lines += [f"![results]({plot_name})", "", "## How it is measured", "", HOW, ""]
    return "\n".join(lines)


HOW = """\
- Load generator (`bench/loadgen.py`): raw asyncio HTTP/1.1 keep-alive connections on uvloop,
  in a process of its own; webhooks look like Shopify's (orders, products, customers,
  inventory; 2-30 KB, log-uniform), each with unique webhook, event and resource ids, signed
  with the shop secret.
- HTTP ceiling: a Starlette endpoint that reads the body and answers 200 (`bench/apps.py bare`).
- Storage ceiling: threads PUTting the same payloads straight to the store with one pooled boto3
  client, one PUT per webhook, at the same concurrency (`bench/baselines.py`).
- Naive design: a synchronous Starlette handler that verifies the HMAC, creates a boto3 client
  and PUTs one object per webhook (`bench/apps.py naive`).
- Receiver: `shopipe receiver` with default group-commit settings; PUTs per webhook from its
  metrics (`shopipe_receiver_segments_total` / accepted requests). Its levels run 6 s, the
  baselines' 3 s: its p99 is a tail over segments, each answering dozens of requests at once.
- Drain: a backlog sent at 64 connections with no worker running, then one `shopipe worker`;
  S3 calls counted inside the worker process (`bench/handler.py`).
- End to end: open-loop load; `bench/handler.py` records receipt and done time of each webhook.
  Two workers, the chart's minimum (`operator.minWorkers`); a shorter run with one worker
  comes first for comparison (one process's boto3 threads and event loop share one GIL).
  RSS of every process sampled from /proc each second during the soak; growth compares the
  median of the first fifth after warm-up with the last fifth.
"""


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, png = out_dir / "RESULTS.md", out_dir / "results.png"
    md.write_text(markdown(results, png.name))
    plot.plot(results, png)
    return md, png


def summary(results: dict[str, Any]) -> str:
    """Target lines for the terminal."""
    out = []
    for t in targets(results):
        mark = "pass" if t["ok"] else "FAIL"
        out.append(
            f"  [{mark}] {t['name']}: {fmt(t['measured'], 3)}{t['unit']} "
            f"(goal {t['op']} {t['goal']:g}{t['unit']}) {t['note']}"
        )
    return "\n".join(out)
