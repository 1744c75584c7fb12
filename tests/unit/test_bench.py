"""The pure parts of bench/: percentiles, RSS trend, payloads, targets and report rendering."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from shopipe import shopify

from bench import report, targets
from bench.payloads import MAX_BYTES, MIN_BYTES, Generator, http_request
from bench.stats import curve, percentile, rss_growth, summarise

pytestmark = pytest.mark.unit


def test_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))


def test_percentile_rejects_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0)


def test_summarise_reports_milliseconds() -> None:
    out = summarise([0.001] * 98 + [0.5, 1.0])
    assert out["n"] == 100
    assert out["p50_ms"] == pytest.approx(1.0)
    assert out["p99_ms"] == pytest.approx(500.0)
    assert out["max_ms"] == pytest.approx(1000.0)


def test_curve_spans_all_percentiles() -> None:
    pts = curve([float(x) for x in range(1, 1001)], points=10)
    assert pts[0] == (10.0, 100.0)
    assert pts[-1] == (100.0, 1000.0)


def test_rss_growth_flat_and_growing() -> None:
    flat = [(float(t), 100 * 2**20 + (t % 3) * 1000.0) for t in range(100)]
    assert abs(rss_growth(flat)["growth_pct"]) < 0.1
    leak = [(float(t), 100 * 2**20 + t * 2**20) for t in range(100)]
    out = rss_growth(leak)
    assert out["growth_pct"] > 30
    assert out["slope_mb_per_min"] == pytest.approx(60.0)


def test_webhooks_are_signed_valid_sized_and_unique() -> None:
    gen = Generator("s3cret", seed=1)
    hooks = [gen.next() for _ in range(300)]
    ids = set()
    for hook in hooks:
        headers = dict(hook.headers)
        assert shopify.verify(hook.body, headers["X-Shopify-Hmac-Sha256"], ["s3cret"])
        sent = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hook.headers]
        parsed = shopify.validate(shopify.shopify_headers(sent))
        assert parsed.webhook_id == hook.webhook_id
        assert MIN_BYTES <= len(hook.body) <= MAX_BYTES
        ids.add((parsed.webhook_id, parsed.event_id, hook.body))
    assert len(ids) == len(hooks)
    raw = http_request(hooks[0], "127.0.0.1:1", "/webhooks/shopify")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == hooks[0].body
    assert f"Content-Length: {len(body)}".encode() in head


def _level(c: int, rps: float, p99: float, puts: float = 1.0) -> dict[str, Any]:
    return {
        "concurrency": c,
        "rps": rps,
        "latency": {"p50_ms": p99 / 2, "p99_ms": p99},
        "puts_per_webhook": puts,
    }


def _results(ingest_peak: float) -> dict[str, Any]:
    mem = {
        "peak_rss_mb": 70.0,
        "early_mb": 70.0,
        "late_mb": 70.5,
        "growth_pct": 0.7,
        "slope_mb_per_min": 0.1,
        "samples": [(0.0, 70.0), (1.0, 70.5)],
    }
    lat = {"p50_ms": 40.0, "p90_ms": 60.0, "p99_ms": 120.0, "p999_ms": 150.0, "max_ms": 160.0}
    return {
        "meta": {"date": "today", "quick": True, "machine": "test box"},
        "duration_s": 10.0,
        "baselines": {
            "bare": [_level(1, 2000, 1), _level(64, 8000, 20)],
            "storage": [_level(1, 150, 10), _level(64, 300, 200)],
            "naive": [_level(1, 50, 30), _level(64, 100, 900)],
        },
        "ingest": {
            "levels": [_level(1, 100, 10, 1.0), _level(64, ingest_peak, 80, 0.02)],
            "receiver_peak_rss_mb": 70.0,
        },
        "drain": {
            "webhooks": 100,
            "records_per_segment": 20.0,
            "rate": 500.0,
            "s3_per_webhook": 0.1,
            "s3_requests": {"GetObject": 5.0},
            "complete": True,
            "processed": 100.0,
            "worker_peak_rss_mb": 80.0,
            "progress": [(0.0, 0.0), (0.2, 100.0)],
        },
        "e2e": {
            "rate": 200.0,
            "seconds": 30.0,
            "achieved_rps": 199.0,
            "ok": 6000,
            "handled": 6000,
            "not_handled": 0,
            "end_to_end": lat,
            "ack": lat,
            "end_to_end_curve": [(50.0, 0.04), (100.0, 0.16)],
            "memory": {"receiver": mem, "worker": mem},
        },
    }


def test_targets_pass_and_fail_by_ratio_to_same_run_baselines() -> None:
    good = {t["name"]: t for t in targets.targets(_results(2000.0))}
    assert good["ingest vs naive design (peak req/s)"]["measured"] == pytest.approx(20.0)
    assert good["ingest vs naive design (peak req/s)"]["ok"]
    assert good["ingest vs one-PUT-per-webhook storage ceiling (peak)"]["ok"]
    assert good["PUTs per webhook at high concurrency"]["ok"]
    assert good["ack p99 at high concurrency"]["ok"]
    assert good["end-to-end p99 (receipt to handler done)"]["ok"]
    assert good["worker RSS growth over the soak"]["ok"]
    bad = {t["name"]: t for t in targets.targets(_results(1400.0))}
    assert not bad["ingest vs one-PUT-per-webhook storage ceiling (peak)"]["ok"]
    assert not bad["ingest vs naive design (peak req/s)"]["ok"]


def test_report_renders_tables_and_plot(tmp_path: Path) -> None:
    results = _results(1400.0)
    md, png = report.write(results, tmp_path)
    text = md.read_text()
    assert "Quick smoke run" in text
    assert "| ingest vs naive design (peak req/s) | 14.0x | >= 20x | FAIL |" in text
    assert "| 64 | 1,400 | 40.0 | 80.0 | 0.020 | - | 8,000 |" in text
    assert "![results](results.png)" in text
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "[FAIL] ingest vs naive design" in report.summary(results)


def test_report_names_the_workers_and_the_one_worker_comparison(tmp_path: Path) -> None:
    results = _results(2000.0)
    results["e2e"]["workers"] = 2
    single = dict(results["e2e"], workers=1, seconds=60.0)
    single["end_to_end"] = summarise([0.3] * 100)
    results["e2e_single"] = single
    md, _ = report.write(results, tmp_path)
    text = md.read_text()
    assert "for 30 s with 2 workers" in text
    assert "| same, one worker, 60 s before the soak | 300 | 300 | 300 | 300 | 300 |" in text


def test_report_gives_the_redis_sizing_table(tmp_path: Path) -> None:
    results = _results(2000.0)
    results["memory"] = {
        "webhooks": 1000,
        "processed": 1000.0,
        "used_before": 2**20,
        "used_after": 2**20 + 400_000,
        "bytes_per_webhook": 400.0,
        "fragmentation_after": 1.1,
        "maxmemory": 768 * 2**20,
        "stream_entries": 40,
        "stream_bytes_per_entry": 25.0,
        "done_markers": 2000,
        "done_marker_bytes": 120.0,
        "state_copies": 500,
        "state_copy_bytes": 200.0,
        "bodies_webhooks": 100,
        "state_copy_with_body_bytes": 10_200.0,
    }
    text = report.write(results, tmp_path)[0].read_text()
    assert "## Redis memory" in text
    assert "| whole pipeline, per webhook (`used_memory` growth / webhooks) | 400 |" in text
    # 86,400 webhooks a day at 400 B; with bodies half of them add 10,000 B more.
    assert "Per day at 1 webhook/s on average (steady state with the 24 h TTLs): 33 MB" in text
    assert "with state bodies: 445 MB (5400 B per webhook)" in text


def test_report_shows_the_sweep_phase_when_it_ran() -> None:
    results = _results(2000.0)
    assert "## Sweep" not in report.markdown(results)
    results["sweep"] = {
        "segments": 200_000,
        "sweep_interval_s": 2.0,
        "sweep_s": 301.5,
        "elapsed_s": 320.0,
        "complete": True,
        "processed": 200_000.0,
        "list_calls": 215.0,
        "worker_peak_rss_mb": 98.2,
    }
    text = report.markdown(results)
    assert "| 200,000 | 301.5 | 320.0 | yes | 215 | 98.2 (pass) |" in text


def test_report_shows_the_forward_phase_as_a_table_of_its_own() -> None:
    results = _results(2000.0)
    results["forward"] = {
        "ceiling_rps": 9000.0,
        "deliveries_per_s": 300.0,
        "ratio_to_ceiling": 300.0 / 9000.0,
        "drain": {"cpu_ms_per_webhook": 2.7},
        "e2e": {"rate": 200.0, "not_handled": 0, "end_to_end": {"p50_ms": 40.0, "p99_ms": 180.0}},
        "rate_limit": {"configured": 50.0, "kept": 48.0, "accuracy": 0.96, "complete": True},
    }
    lines = report.markdown(results).splitlines()
    start = lines.index("## Forward to an app (`forward` handler)")
    table = lines[start + 4 : lines.index("", start + 4)]
    assert table == [
        "| measure | value |",
        "|---|---|",
        "| HTTP client ceiling (straight) | 9000 requests/s |",
        "| forwarded, one worker | 300 deliveries/s (0.03 of the ceiling) |",
        "| worker CPU per delivery (drain) | 2.70 ms (the whole worker: segment, ledger,"
        " delivery) |",
        "| receipt to delivered at 200/s | p50 40 ms, p99 180 ms (0 not delivered in time) |",
        "| rate limit 50/s | kept 48.0/s (0.96 of the limit) |",
    ]
