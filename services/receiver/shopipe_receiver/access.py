"""JSON access logs: one line per request with method, path, status, duration and, for
webhooks, the outcome, topic and record id. Never the body, the signature, a query string or a
header value: those may carry payloads or credentials."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from shopipe.logs import get_logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = get_logger("shopipe_receiver.access")

_FROM_STATE = ("outcome", "topic", "record")


def log_request(scope: Scope, status: int, started: float, state: Mapping[str, Any]) -> None:
    """One access line; ``started`` is a ``time.perf_counter()`` reading."""
    if not log.isEnabledFor(logging.INFO):  # SHOPIPE_LOG_LEVEL=warning or above: build nothing
        return
    extra: dict[str, Any] = {
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    for key in _FROM_STATE:
        if key in state:
            extra[key] = state[key]
    client = scope.get("client")
    if client:
        extra["client"] = client[0]
    log.info("request", extra=extra)


class AccessLog:
    """Middleware logging every request that reaches the Starlette app (ops routes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log_request(scope, status, start, scope.get("state") or {})
