"""The baselines every shopipe figure is divided by, measured in the same run:

- HTTP ceiling: ``bench.apps`` ``bare`` (Starlette answering 200) under the same load generator.
- Storage ceiling: boto3 PUTs of the same payloads straight to the store, one PUT per webhook,
  at the same concurrency (threads sharing one pooled client, Content-MD5 like the receiver).
  This is what any one-object-per-webhook design can reach at best on this store.
- Naive design: ``bench.apps`` ``naive`` (sync handler, a boto3 client per request, one PUT per
  webhook).

The storage ceiling runs as ``python -m bench.baselines`` (JSON spec on stdin) so its threads do
not share a GIL with anything else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from bench.harness import Bench, base_env
from bench.payloads import Generator
from bench.stats import summarise


def http_levels(bench: Bench, kind: str, levels: list[int], **load: Any) -> list[dict[str, Any]]:
    """Throughput and latency of a baseline app at each concurrency level."""
    server = bench.app(kind)
    try:
        bench.load(server, concurrency=4, requests=50, seconds=5.0)  # warm-up, not recorded
        rows = []
        for c in levels:
            cpu = server.cpu()
            row = bench.load(server, concurrency=c, **load)
            ok = row["ok"]
            row["cpu_ms_per_webhook"] = (server.cpu() - cpu) * 1000 / ok if ok else float("nan")
            rows.append(row)
        return rows
    finally:
        bench.stop_server(server)


def storage_levels(
    bench: Bench, levels: list[int], requests: int, seconds: float
) -> list[dict[str, Any]]:
    info = bench.info
    out = []
    for c in levels:
        spec = {
            "endpoint": info.s3_endpoint,
            "bucket": info.s3_bucket,
            "access_key": info.s3_access_key,
            "secret_key": info.s3_secret_key,
            "concurrency": c,
            "requests": requests,
            "seconds": seconds,
        }
        done = subprocess.run(
            [sys.executable, "-m", "bench.baselines"],
            input=json.dumps(spec).encode(),
            capture_output=True,
            env=base_env(),
            timeout=seconds + 120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench: storage ceiling failed: {done.stderr.decode()[-2000:]}")
        out.append(json.loads(done.stdout))
    return out


def put_many(spec: dict[str, Any]) -> dict[str, Any]:
    """PUT ``requests`` payloads with ``concurrency`` threads, stopping at ``seconds``."""
    c = int(spec["concurrency"])
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=spec["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=spec["access_key"],
        aws_secret_access_key=spec["secret_key"],
        config=Config(
            max_pool_connections=c,
            retries={"mode": "standard", "max_attempts": 2},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    gen = Generator("storage-ceiling", seed=11)
    bodies = [gen.next().body for _ in range(int(spec["requests"]))]
    lock = threading.Lock()
    it = iter(bodies)
    latencies: list[float] = []
    errors = 0

    def worker(deadline: float) -> None:
        nonlocal errors
        # Bounded by the prepared bodies and by the deadline.
        while time.perf_counter() < deadline:
            with lock:
                body = next(it, None)
            if body is None:
                return
            md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
            t = time.perf_counter()
            try:
                client.put_object(
                    Bucket=spec["bucket"],
                    Key=f"ceiling/{uuid.uuid4().hex}.json",
                    Body=body,
                    ContentMD5=md5,
                )
            except Exception:  # any failure is one error of the run
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t)

    client.head_bucket(Bucket=spec["bucket"])  # connect before the clock starts
    t0, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=c) as pool:
        for _ in range(c):
            pool.submit(worker, t0 + float(spec["seconds"]))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    client.close()
    return {
        "concurrency": c,
        "sent": len(latencies) + errors,
        "ok": len(latencies),
        "errors": {"put": errors} if errors else {},
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "latency": summarise(latencies),
        "cpu_ms_per_webhook": cpu * 1000 / len(latencies) if latencies else float("nan"),
    }


if __name__ == "__main__":
    print(json.dumps(put_many(json.loads(sys.stdin.read()))))
