"""Run a receiver inside the current event loop (tests, benchmarks): port 0 allowed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shopipe.config import ReceiverSettings
from shopipe.httpops import serve

from shopipe_receiver.app import Receiver


@dataclass(frozen=True)
class Running:
    receiver: Receiver
    url: str  # the webhook URL
    base: str  # http://host:port


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
    try:
        server = await serve(
            receiver.app,
            settings.http_host,
            settings.http_port,
            timeout_keep_alive=settings.http_keepalive_seconds,
        )
        try:
            await _listening(settings.http_host, server.port)
            base = f"http://{settings.http_host}:{server.port}"
            yield Running(receiver, base + settings.webhook_path, base)
        finally:
            await server.stop()
    finally:
        await receiver.stop()
