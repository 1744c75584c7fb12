"""Markdown of RESULTS.md: number formatting, tables, and the sections of the issue 7 phases
(ingest against the baselines, drain, end to end with the memory soak)."""

from __future__ import annotations

import math
from typing import Any

from bench.targets import cpu_at_peak, peak


def fmt(x: Any, digits: int = 1) -> str:
    """A figure for a table: thousands separated from 100 up, "-" for none or nan."""
    if isinstance(x, int) and not isinstance(x, bool):
        x = float(x)
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else str(x)


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def workers(e2e: dict[str, Any]) -> str:
    n = int(e2e.get("workers", 1))
    return "one worker" if n == 1 else f"{n} workers"


def _by_level(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["concurrency"]): r for r in rows}


INGEST_HEAD = [
    "conns",
    "shopipe req/s",
    "p50 ms",
    "p99 ms",
    "PUTs/webhook",
    "CPU ms/webhook",
    "HTTP ceiling req/s",
    "p99 ms",
    "CPU ms/webhook",
    "storage ceiling PUT/s",
    "naive req/s",
    "naive p99 ms",
]


def ingest(results: dict[str, Any]) -> list[str]:
    base = results.get("baselines", {})
    levels = results.get("ingest", {}).get("levels", [])
    if not levels:
        return []
    lines = [
        "## Receiver ingest against the baselines",
        "",
        "Closed loop: each connection sends its next signed webhook (2-30 KB) as soon "
        "as the previous one was answered. req/s counts 200s only; latency is the ack "
        "latency seen by the client.",
        "",
    ]
    series = {k: _by_level(base.get(k, [])) for k in ("bare", "storage", "naive")}
    rows = []
    for r in levels:
        c = int(r["concurrency"])
        b, s, n = (series[k].get(c, {}) for k in ("bare", "storage", "naive"))
        rows.append(
            [
                str(c),
                fmt(r["rps"]),
                fmt(r["latency"]["p50_ms"]),
                fmt(r["latency"]["p99_ms"]),
                fmt(r["puts_per_webhook"], 3),
                fmt(r.get("cpu_ms_per_webhook"), 2),
                fmt(b.get("rps")),
                fmt(b.get("latency", {}).get("p99_ms")),
                fmt(b.get("cpu_ms_per_webhook"), 2),
                fmt(s.get("rps")),
                fmt(n.get("rps")),
                fmt(n.get("latency", {}).get("p99_ms")),
            ]
        )
    lines += table(INGEST_HEAD, rows)
    return [
        *lines,
        "CPU ms/webhook: CPU time of the server process alone (not the store, not the load "
        "generator) per accepted webhook; it moves less than throughput on a shared machine.",
        "",
        f"Peak: shopipe {fmt(peak(levels))} req/s; HTTP ceiling "
        f"{fmt(peak(base.get('bare', [])))}; storage ceiling "
        f"{fmt(peak(base.get('storage', [])))} PUT/s (boto3 client CPU "
        f"{fmt(cpu_at_peak(base.get('storage', [])), 2)} ms per PUT); naive design "
        f"{fmt(peak(base.get('naive', [])))} req/s. Receiver peak RSS "
        f"{fmt(results['ingest'].get('receiver_peak_rss_mb'))} MB.",
        "",
    ]


DRAIN_HEAD = [
    "backlog",
    "records/segment",
    "one worker webhooks/s",
    "S3 requests/webhook",
    "worker CPU ms/webhook",
    "S3 calls",
    "drained",
    "worker peak RSS MB",
]


def drain(results: dict[str, Any]) -> list[str]:
    d = results.get("drain")
    if not d:
        return []
    row = [
        str(d["webhooks"]),
        fmt(d["records_per_segment"]),
        fmt(d["rate"]),
        fmt(d["s3_per_webhook"], 3),
        fmt(d.get("cpu_ms_per_webhook"), 2),
        ", ".join(f"{k} {v:g}" for k, v in sorted(d["s3_requests"].items())),
        "yes" if d["complete"] else f"no ({d['processed']:g})",
        fmt(d["worker_peak_rss_mb"]),
    ]
    return ["## Worker drain", "", *table(DRAIN_HEAD, [row])]


LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")
MEMORY_HEAD = [
    "process",
    "peak RSS MB",
    "RSS early MB",
    "RSS late MB",
    "growth %",
    "slope MB/min",
    "threads first → last",
]


def e2e(results: dict[str, Any]) -> list[str]:
    run = results.get("e2e")
    if not run:
        return []
    e, a, h = run["end_to_end"], run["ack"], run.get("end_to_end_handled", {})
    keys = LATENCY_KEYS
    cpu = ", ".join(f"{k} {v:.0f} %" for k, v in run.get("cpu_pct", {}).items())
    lines = [
        "## End to end and memory soak",
        "",
        f"Open loop at {run['rate']:g} webhooks/s for {run['seconds']:g} s with "
        f"{workers(run)} (achieved {fmt(run['achieved_rps'])}/s, {run['ok']} acknowledged, "
        f"{run['handled']} handled, {fmt(run.get('records_per_segment'))} records per "
        f"segment; CPU of one core: {cpu or '-'}). Latency from receipt to handler done; "
        "in the first row an acknowledged webhook not handled within 15 s of the end of the "
        "load counts as infinitely late.",
        "",
    ]
    rows = [
        ["receipt → handler done, all acknowledged", *[fmt(e[k]) for k in keys]],
        ["receipt → handler done, handled only", *[fmt(h.get(k)) for k in keys]],
        ["ack (client, from due time)", *[fmt(a[k]) for k in keys]],
    ]
    one = results.get("e2e_single")
    if one:
        label = f"same, {workers(one)}, {one['seconds']:g} s before the soak"
        rows.append([label, *[fmt(one["end_to_end"][k]) for k in keys]])
    lines += table(["", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"], rows)
    memory = [
        [
            p,
            fmt(m["peak_rss_mb"]),
            fmt(m["early_mb"]),
            fmt(m["late_mb"]),
            fmt(m["growth_pct"]),
            fmt(m["slope_mb_per_min"], 2),
            " → ".join(str(n) for n in m.get("threads", [])) or "-",
        ]
        for p, m in run["memory"].items()
    ]
    return lines + table(MEMORY_HEAD, memory)
