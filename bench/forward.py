"""The forward handler (docs/forwarding.md) against a local destination that answers at once
(the ``sink`` app of bench.apps), on a bucket, stream and key prefix of its own.

- ceiling: the same signed webhooks POSTed straight to the destination by the load generator,
  at the worker's concurrency (SHOPIPE_CONCURRENCY segments, one delivery each at a time): the
  HTTP client ceiling of this machine, same run;
- drain: a backlog of N webhooks, then one worker forwarding them: deliveries per second per
  worker, and its ratio to the ceiling;
- end to end: a steady load through the receiver and that worker, latency from receipt to the
  delivery's 2xx (``bench.handler`` runs after the forward handler: its "done" is after it);
- rate limit: a route limited to R per second drains a backlog: the rate it kept, against R.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import drain, e2e
from bench.harness import Bench, Server

CONCURRENCY = 16  # SHOPIPE_CONCURRENCY's default: deliveries one worker has in flight at most
ISOLATED = {
    "SHOPIPE_S3_BUCKET": "bench-forward",
    "SHOPIPE_STREAM": "fwd:webhooks",
    "SHOPIPE_CONSUMER_GROUP": "fwd-workers",
    "SHOPIPE_KEY_PREFIX": "fwd",
}


def _worker_env(bench: Bench, routes: Path, **extra: str) -> dict[str, str]:
    return {
        **ISOLATED,
        "SHOPIPE_BUILTIN_HANDLERS": "forward",
        "SHOPIPE_FORWARD_ROUTES_FILE": str(routes),
        "SHOPIPE_FORWARD_SHOPIFY_SECRET": bench.info.shopify_secret,
        "SHOPIPE_CONCURRENCY": str(CONCURRENCY),
        **extra,
    }


def _routes(bench: Bench, name: str, url: str, **route: Any) -> Path:
    path = bench.dir / f"{name}.json"
    path.write_text(json.dumps({"routes": {"app": {"topics": ["*"], "url": url, **route}}}))
    return path


def run(
    bench: Bench,
    n: int,
    limit: float,
    rate: float,
    seconds: float,
    rate_limit: float,
    **worker_settings: str,
) -> dict[str, Any]:
    dest: Server = bench.app("sink")
    url = f"http://127.0.0.1:{dest.port}/webhooks/shopify"
    ceiling = bench.load(dest, concurrency=CONCURRENCY, requests=n, seconds=limit)

    bench.create_bucket(ISOLATED["SHOPIPE_S3_BUCKET"])
    receiver = bench.receiver(**ISOLATED)
    fast = _routes(bench, "routes-fast", url, max_in_flight=1000)
    env = _worker_env(bench, fast, **worker_settings)
    done_file = bench.dir / "done-forward.txt"
    drained, worker = drain.run(bench, receiver, n, limit, done_file, **env)
    latency = e2e.run(bench, receiver, [worker], done_file, rate, seconds)
    bench.stop_server(worker)

    # Enough webhooks for ten seconds at the limit: the start-up second weighs little.
    limited = _routes(bench, "routes-limited", url, max_in_flight=1000, rate_per_second=rate_limit)
    env = _worker_env(bench, limited, **worker_settings)
    kept, worker = drain.run(
        bench, receiver, int(rate_limit * 10), limit, bench.dir / "done-limited.txt", **env
    )
    bench.stop_server(worker)
    return {
        "ceiling_rps": ceiling["rps"],
        "deliveries_per_s": drained["rate"],
        "ratio_to_ceiling": drained["rate"] / ceiling["rps"] if ceiling["rps"] else float("nan"),
        "drain": drained,
        "e2e": latency,
        "rate_limit": {
            "configured": rate_limit,
            "kept": kept["rate"],
            "accuracy": kept["rate"] / rate_limit,
            "complete": kept["complete"],
        },
    }


def section(f: dict[str, Any]) -> list[str]:
    """RESULTS.md lines of the forward phase."""
    lat = f["e2e"]["end_to_end"]
    lim = f["rate_limit"]
    return [
        "",
        "## Forward to an app (`forward` handler)",
        "",
        "One worker forwarding to a local destination that answers at once (docs/forwarding.md),"
        " against the same signed requests sent straight by the load generator at the worker's"
        f" {CONCURRENCY} deliveries in flight (same run).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| HTTP client ceiling (straight) | {f['ceiling_rps']:.0f} requests/s |",
        f"| forwarded, one worker | {f['deliveries_per_s']:.0f} deliveries/s"
        f" ({f['ratio_to_ceiling']:.2f} of the ceiling) |",
        f"| worker CPU per delivery (drain) | {f['drain']['cpu_ms_per_webhook']:.2f} ms"
        " (the whole worker: segment, ledger, delivery) |",
        f"| receipt to delivered at {f['e2e']['rate']:g}/s | p50 {lat['p50_ms']:.0f} ms,"
        f" p99 {lat['p99_ms']:.0f} ms ({f['e2e']['not_handled']} not delivered in time) |",
        f"| rate limit {lim['configured']:g}/s | kept {lim['kept']:.1f}/s"
        f" ({lim['accuracy']:.2f} of the limit) |",
        "",  # the table ends here: a line right after it would be read as one more row
    ]
