"""How uvicorn serves the receiver (``shopipe receiver`` and in-loop for tests: port 0 allowed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from shopipe.config import ReceiverSettings
from shopipe.httpops import serve

from shopipe_receiver.app import Receiver
from shopipe_receiver.protocol import HeadLimits, protocol_for


def uvicorn_options(settings: ReceiverSettings) -> dict[str, Any]:
    """The uvicorn options of a receiver, the same in both ways it runs."""
    limits = HeadLimits(
        settings.http_max_headers,
        settings.http_max_header_bytes,
        settings.http_head_timeout_seconds,
    )
    return {
        "timeout_keep_alive": settings.http_keepalive_seconds,
        # httptools (C parser) with our head limits; uvicorn's pure-Python h11 costs more CPU.
        "http": protocol_for(limits),
        # uvicorn answers 503 once open connections reach this: the +1 counts the one asking.
        "limit_concurrency": settings.http_max_connections + 1,
        "server_header": False,
    }


@dataclass(frozen=True)
class Running:
    receiver: Receiver
    url: str  # the webhook URL
    base: str  # http://host:port
    ops: str  # http://host:port of /metrics, /status...: base unless SHOPIPE_OPS_PORT is set


async def _listening(host: str, port: int, seconds: float = 10.0) -> None:
    """serve() returns once the socket is bound; uvicorn listens a moment later."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def running(settings: ReceiverSettings) -> AsyncIterator[Running]:
    """Start a receiver on ``settings.http_host:http_port``; stop it (and its writes) on exit."""
    receiver = Receiver(settings)
    await receiver.start()
    # One readiness check before the first webhook, as the kubelet's probe makes before a pod
    # gets traffic: the S3 client's first call loads what botocore loads lazily (on a loaded
    # machine that first call outlasted the answer deadline). Its result does not matter here.
    await receiver.ready()
    try:
        server = await serve(
            receiver.app, settings.http_host, settings.http_port, **uvicorn_options(settings)
        )
        try:
            await _listening(settings.http_host, server.port)
            base = f"http://{settings.http_host}:{server.port}"
            await receiver.serve_ops()
            ops = base
            if receiver.ops_port is not None:
                ops = f"http://{settings.http_host}:{receiver.ops_port}"
            yield Running(receiver, base + settings.webhook_path, base, ops)
        finally:
            await server.stop()
    finally:
        await receiver.stop()
