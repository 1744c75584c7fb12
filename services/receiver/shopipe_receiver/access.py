"""JSON access logs: one line per request with method, path, status, duration and, for
webhooks, the outcome, topic and record id. Never the body, the signature, a query string or a
header value: those may carry payloads or credentials."""

from __future__ import annotations

import time
from typing import Any

from shopipe.logs import get_logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = get_logger("shopipe_receiver.access")


class AccessLog:
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
            state: dict[str, Any] = scope.get("state") or {}
            extra: dict[str, Any] = {
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            }
            for key in ("outcome", "topic", "record"):
                if key in state:
                    extra[key] = state[key]
            client = scope.get("client")
            if client:
                extra["client"] = client[0]
            log.info("request", extra=extra)
