"""Overload (issue 15 §1): the receiver in front of a slow or stalled store.

The receiver writes through a delaying TCP proxy in front of SeaweedFS
(``shopipe_devstack.slowproxy``, its own process): first healthy (the proxy passes everything:
the reference), then every S3 request held 1 s, then 6 s, then the store stalled (connections
accepted, nothing answered). Each stage offers the same open-loop load; the slowed store takes at
most ``SHOPIPE_MAX_PUTS_IN_FLIGHT`` / delay PUTs per second (8 and 1.3 PUT/s), so one PUT per
webhook would need 12x and 75x what it can take, and a stalled one takes nothing. After the stall
the store recovers within the same load run: the time to full speed is from the recovery to the
first second of due time from which every later second's webhooks are all answered 200.

Per stage: goodput (200/s), share of 503s, answer-time p99 of all requests (goal: at most the
answer deadline + 100 ms; no answer counts as infinite), the receiver's peak RSS, and its PUTs in
flight at most (the cap).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness import Bench, Server, http_get, total, wait_for
from bench.memory import Sampler

BUCKET = "bench-overload"
STREAM = "bench:overload"
STAGES = [("healthy", "0"), ("S3 +1 s per request", "1"), ("S3 +6 s per request", "6")]
DEADLINE_SLACK_MS = 100.0


def _proxy(bench: Bench) -> tuple[str, Path]:
    """Start the slow proxy in front of the stack's S3: (its endpoint URL, its control file)."""
    s3 = urlsplit(bench.info.s3_endpoint)
    port_file = bench.dir / "slowproxy.port"
    control = bench.dir / "slowproxy.mode"
    control.write_text("0")
    argv = [
        sys.executable,
        "-m",
        "shopipe_devstack.slowproxy",
        str(port_file),
        str(s3.hostname),
        str(s3.port),
        str(control),
    ]
    bench.stack.spawn("bench-slowproxy", argv)
    port = wait_for("slow proxy", lambda: port_file.exists() and int(port_file.read_text()), 30.0)
    return f"http://127.0.0.1:{port}", control


def _status(receiver: Server) -> dict[str, Any]:
    code, body = http_get(f"http://127.0.0.1:{receiver.port}/status")
    return json.loads(body) if code == 200 else {}


def _ready(receiver: Server) -> bool:
    return http_get(f"http://127.0.0.1:{receiver.port}/readyz", 3.0)[0] == 200


ANSWER = "shopipe_receiver_request_seconds"


def _late(receiver: Server) -> tuple[float, float, float]:
    """(answers so far, answers later than 5 s, connections refused before the app) by the
    receiver's own count; its clock starts when the request head was parsed, so load-generator
    lag on a busy machine is not in it."""
    # A scrape may time out on a busy machine: retry (bounded) rather than read nothing.
    m = wait_for("receiver metrics", receiver.metrics, 30.0, 0.2)
    n = total(m, ANSWER + "_count")
    refused = total(m, "shopipe_receiver_http_refused_total")
    return n, n - total(m, ANSWER + "_bucket", le="5.0"), refused


def _load(
    bench: Bench, receiver: Server, **spec: Any
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """One load run and the receiver's RSS sampled meanwhile ((seconds, MB) pairs)."""
    before = _late(receiver)
    with Sampler({"receiver": receiver}, interval=0.25) as sampler:
        load = bench.load(receiver, **spec)
    n, late, refused = (a - b for a, b in zip(_late(receiver), before, strict=True))
    load["receiver_answers"], load["receiver_late_5s"], load["http_refused"] = n, late, refused
    samples = [(round(t, 2), round(r / 2**20, 2)) for t, r in sampler.samples["receiver"]]
    return load, samples


def _row(
    name: str, load: dict[str, Any], receiver: Server, rate: float, rss: list[tuple[float, float]]
) -> dict[str, Any]:
    answered = sum(load["status"].values())
    sent = max(int(load["sent"]), 1)
    status = _status(receiver)
    held_peak = status.get("body_bytes_held_peak")
    return {
        "stage": name,
        "offered_rps": rate,
        "sent": load["sent"],
        "goodput_rps": load["rps"],
        "share_503": load["status"].get("503", 0) / sent,
        "unanswered": sent - answered,
        "status": load["status"],
        "p99_all_ms": load["latency_all"]["p99_ms"],
        "p99_all_from_send_ms": load.get("latency_all_from_send", {}).get("p99_ms"),
        "max_all_ms": load["latency_all"]["max_ms"],
        "p99_ok_ms": load["latency"]["p99_ms"],
        "rss_max_mb": max((r for _, r in rss), default=0.0),
        "rss_samples": rss,
        "puts_in_flight_max": status.get("segments_in_flight_peak"),
        # The receiver's highest since it started, like the PUTs in flight.
        "body_mb_held_max": None if held_peak is None else held_peak / 2**20,
        "timeline": load["timeline"],
        "receiver_answers": load.get("receiver_answers"),
        "receiver_late_5s": load.get("receiver_late_5s"),
        "http_refused": load.get("http_refused"),
        "errors": load["errors"],  # the load generator's: no answer at all
    }


def full_speed_after(timeline: list[list[int]], since: float, rate: float) -> float:
    """Seconds from ``since`` (seconds into the load) to the first second of due time from
    which every later second had all its webhooks answered 200; nan if never."""
    ok_from = None
    for second, ok, other in timeline:
        if second < since:
            continue
        if other == 0 and ok >= 0.9 * rate:  # a full second (the last one may be partial)
            ok_from = second if ok_from is None else ok_from
        elif other:
            ok_from = None
    return float("nan") if ok_from is None else max(0.0, ok_from - since)


def run(
    bench: Bench, rate: float, seconds: float, connections: int, **settings: str
) -> dict[str, Any]:
    bench.create_bucket(BUCKET)
    endpoint, control = _proxy(bench)
    receiver = bench.receiver(
        **settings, SHOPIPE_S3_ENDPOINT=endpoint, SHOPIPE_S3_BUCKET=BUCKET, SHOPIPE_STREAM=STREAM
    )
    deadline_s = float(settings.get("SHOPIPE_ANSWER_DEADLINE_SECONDS", 4.0))
    spec = {
        "concurrency": connections,
        "rate": rate,
        "requests": int(rate * seconds) + 1,
        "lazy": True,
    }
    rows = []
    try:
        bench.load(receiver, concurrency=4, requests=100, seconds=5.0)  # warm-up, not recorded
        for name, mode in STAGES:
            control.write_text(mode)
            load, rss = _load(bench, receiver, seconds=seconds, **spec)
            rows.append(_row(name, load, receiver, rate, rss))
            control.write_text("0")
            wait_for("receiver ready after the stage", lambda: _ready(receiver), 60.0, 0.2)
        # Stalled first (long enough that webhooks meet their deadline in it, even when the
        # load generator starts late), then the store recovers under the same load.
        stall = max(seconds, 3 * deadline_s)
        total = stall + 2 * seconds
        recovered: list[float] = []

        def recover() -> None:
            control.write_text("0")
            recovered.append(time.time())

        control.write_text("stall")
        timer = threading.Timer(stall, recover)
        timer.start()
        try:
            load, rss = _load(
                bench, receiver, **(spec | {"requests": int(rate * total) + 1}), seconds=total
            )
        finally:
            timer.cancel()
            control.write_text("0")
        row = _row("stalled, then recovered", load, receiver, rate, rss)
        # On the load generator's clock (it started a moment after the stall).
        at = (recovered[0] if recovered else time.time()) - float(load["t0_epoch"])
        stalled = [c for c in load["timeline"] if c[0] < int(at)]
        row["recovered_at_s"] = at
        row["share_503_while_stalled"] = sum(c[2] for c in stalled) / max(
            1, sum(c[1] + c[2] for c in stalled)
        )
        row["full_speed_after_s"] = full_speed_after(load["timeline"], at, rate)
        rows.append(row)
    finally:
        bench.stop_server(receiver)
        bench.stack.stop_process("bench-slowproxy")
    return {
        "rate": rate,
        "seconds": seconds,
        "connections": connections,
        "deadline_ms": deadline_s * 1000,
        "goal_p99_ms": deadline_s * 1000 + DEADLINE_SLACK_MS,
        "stages": rows,
        "receiver_peak_rss_mb": receiver.rss()[1] / 2**20,
    }


# --- report (RESULTS.md) -------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's goals for this phase: answer-time p99 of all requests within the deadline +
    100 ms at every stage, and the receiver's memory flat (at most 25 % over the healthy stage)."""
    ov = results.get("overload")
    if not ov:
        return []
    out = []
    for row in ov["stages"]:
        p99 = float(row["p99_all_ms"])
        out.append(
            {
                "name": f"overload answer p99, all requests: {row['stage']}",
                "measured": p99,
                "op": "<=",
                "goal": ov["goal_p99_ms"],
                "unit": "ms",
                "ok": p99 <= ov["goal_p99_ms"],
                "note": f"deadline {ov['deadline_ms']:g} ms + 100 ms",
            }
        )
    base = float(ov["stages"][0]["rss_max_mb"]) or float("nan")
    worst = max(float(r["rss_max_mb"]) for r in ov["stages"][1:]) if ov["stages"][1:] else base
    growth = (worst / base - 1) * 100
    out.append(
        {
            "name": "overload receiver RSS over the healthy stage",
            "measured": growth,
            "op": "<=",
            "goal": 25,
            "unit": "%",
            "ok": growth <= 25,
            "note": f"highest sampled RSS {worst:.0f} MB vs {base:.0f} MB healthy",
        }
    )
    return out


def _s(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f}"


def _n(x: Any) -> str:
    return "-" if x is None else f"{float(x):.0f}"


def markdown(results: dict[str, Any]) -> list[str]:
    ov = results.get("overload")
    if not ov:
        return []
    lines = [
        "## Overload: a slow or stalled store",
        "",
        f"Open loop at {ov['rate']:g} webhooks/s on up to {ov['connections']} connections, "
        f"{ov['seconds']:g} s per stage, S3 behind a delaying proxy (the last stage: stalled, "
        "then recovered under the same load; recovery at the second shown). Answer deadline "
        f"{ov['deadline_ms']:g} ms; p99 of all requests counts 503s, and no answer as infinite.",
        "",
        "| stage | goodput 200/s | 503 share | p99 all ms | p99 all from send ms | max all ms "
        "| p99 of 200s ms "
        "| RSS max MB | body MB held max | PUTs in flight max "
        "| recovery at s → full speed after s | receiver's own answers > 5 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ov["stages"]:
        share = r.get("share_503_while_stalled", r["share_503"])
        lines.append(
            f"| {r['stage']} | {r['goodput_rps']:.1f} | {share * 100:.0f} % "
            f"| {r['p99_all_ms']:.0f} | {_n(r.get('p99_all_from_send_ms'))} "
            f"| {r['max_all_ms']:.0f} | {r['p99_ok_ms']:.0f} "
            f"| {r['rss_max_mb']:.0f} | {_s(r.get('body_mb_held_max'))} "
            f"| {r['puts_in_flight_max']} "
            f"| {_s(r.get('recovered_at_s'))} → {_s(r.get('full_speed_after_s'))} "
            f"| {_n(r.get('receiver_late_5s'))} of {_n(r.get('receiver_answers'))} |"
        )
    lines += [
        "",
        "Answer times are the load generator's, from each request's due time: on a busy "
        "machine they include its own lag (the target is judged on these). "
        "From send: from the moment the request was written on its connection, without that "
        "lag (a connection opened first is not in it). The last column is the receiver's own count "
        "(`shopipe_receiver_request_seconds`, from the parsed request head) of answers later "
        "than 5 s, Shopify's timeout. "
        "503 share of the last stage: while stalled only. Body MB held and PUTs in flight: the "
        "receiver's highest since it started (`body_bytes_held_peak`, `segments_in_flight_peak` "
        "of /status), never above `SHOPIPE_MAX_BODY_BYTES_IN_MEMORY` and "
        "`SHOPIPE_MAX_PUTS_IN_FLIGHT`.",
        "",
    ]
    return lines
