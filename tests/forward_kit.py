"""The forward handler's test kit: a routes file, workers with the forward handler on the
worker kit's stream and bucket, an in-process receiver in front of them, and destinations (the
Node app on @shopify/shopify-api, a programmable Starlette app that records what it saw)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from shopipe import httpops, shopify
from shopipe.config import WorkerSettings
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import Running, running
from shopipe_worker.consumer import Consumer
from shopipe_worker.processor import Processor
from shopipe_worker.registry import Registry, build
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.receiver_kit import receiver_settings
from tests.worker_kit import Kit, stopped

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / ".tools" / "node" / "node_modules"
NODE_SERVER = Path(__file__).parent / "integration" / "forward_node" / "server.mjs"
APP_SECRET = "forward-test-app-secret"


def write_routes(path: Path, routes: dict[str, dict[str, Any]]) -> str:
    path.write_text(json.dumps({"routes": routes}))
    return str(path)


def forward_env(routes_file: str, **extra: str) -> dict[str, str]:
    return {
        "SHOPIPE_BUILTIN_HANDLERS": "forward",
        "SHOPIPE_FORWARD_ROUTES_FILE": routes_file,
        "SHOPIPE_FORWARD_SHOPIFY_SECRET": APP_SECRET,
        **extra,
    }


@contextlib.asynccontextmanager
async def workers(
    kit: Kit, overrides: dict[str, str], n: int = 1, stop_seconds: float = 30.0
) -> AsyncIterator[list[Registry]]:
    """``n`` in-process workers (each its own registry, so its own HTTP clients) with the
    forward handler, on the kit's stream and bucket; they have ``stop_seconds`` to stop."""
    regs: list[Registry] = []
    consumers: list[Consumer] = []
    for i in range(n):
        s: WorkerSettings = kit.with_settings(SHOPIPE_POD_NAME=f"fw{i}", **overrides)
        reg = build(s.builtin_handlers, s.handlers, s)
        regs.append(reg)
        consumers.append(Consumer(s, kit.master, Processor(s, kit.master, kit.store, reg)))
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        yield regs
    finally:
        for c in consumers:
            c.stop()
        await stopped(tasks, stop_seconds)
        for reg in regs:
            await reg.close()


@contextlib.asynccontextmanager
async def receiver(kit: Kit) -> AsyncIterator[Running]:
    """A receiver writing to the kit's bucket and stream, verifying with APP_SECRET."""
    s = receiver_settings(
        kit.stack,
        APP_SECRET,
        SHOPIPE_S3_BUCKET=kit.settings.s3_bucket,
        SHOPIPE_STREAM=kit.settings.stream,
        SHOPIPE_KEY_PREFIX=kit.settings.key_prefix,
    )
    async with running(s) as r:
        yield r


@contextlib.contextmanager
def served(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A destination app in a process of its own, which prints its port on its first line once
    it listens; yields its webhook URL, stops it after. Its stderr goes to ``log``."""
    with (
        log.open("wb") as err,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env) as proc,
    ):
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60.0)
            line = proc.stdout.readline().decode().strip() if ready else ""
            if not line.isdigit():
                raise AssertionError(f"the app did not start: {log.read_text()[-2000:]}")
            yield f"http://127.0.0.1:{line}/webhooks"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@contextlib.contextmanager
def node_app(record_file: Path) -> Iterator[str]:
    """The Node destination; yields its URL. Skipped when node or the package is missing
    (`make tools` installs it)."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@shopify" / "shopify-api").is_dir():
        pytest.skip("node and @shopify/shopify-api (make tools) are needed")
    argv = [node, str(NODE_SERVER), str(NODE_MODULES), APP_SECRET, str(record_file)]
    with served(argv, record_file.with_suffix(".log")) as url:
        yield url


async def post_samples(url: str) -> dict[str, tuple[str, bytes]]:
    """Every shipped sample topic, signed with APP_SECRET, POSTed to the receiver at ``url``
    (each answered 200): webhook id -> (topic, body)."""
    sent: dict[str, tuple[str, bytes]] = {}
    async with httpx.AsyncClient(timeout=10) as c:
        for topic in shopify.SAMPLE_TOPICS:
            body = shopify.sample(topic)
            headers = signed_headers(topic, body, APP_SECRET)
            resp = await c.post(url, content=body, headers=headers)
            assert resp.status_code == 200, topic
            sent[headers["X-Shopify-Webhook-Id"]] = (topic, body)
    return sent


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines written so far; a last line still being written is not one yet."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the part after the last newline is unfinished
    return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Seen:
    """What the Starlette destination saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    starts: list[float] = field(default_factory=list)


Answer = Callable[[Request, bytes], Awaitable[Response]]


async def ok(_req: Request, _body: bytes) -> Response:
    return Response("ok")


@contextlib.asynccontextmanager
async def destination(answer: Answer = ok) -> AsyncIterator[tuple[str, Seen]]:
    """A local destination that records each request (headers, body, when) and the most
    requests it had in flight at once; ``answer`` decides each answer (it may wait)."""
    seen = Seen()

    async def hook(req: Request) -> Response:
        seen.in_flight += 1
        seen.max_in_flight = max(seen.max_in_flight, seen.in_flight)
        seen.starts.append(time.monotonic())
        try:
            body = await req.body()
            seen.requests.append({"headers": dict(req.headers), "body": body})
            return await answer(req, body)
        finally:
            seen.in_flight -= 1

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = await httpops.serve(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}/hook", seen
    finally:
        await server.stop()
