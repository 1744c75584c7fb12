"""The receiver's Starlette app: verify, store durably, answer; announce off the critical path.

Order per webhook: read the body (cap, deadline) -> check the signature (401) -> validate the
headers (400 naming one) -> join a segment and wait for its PUT (503 if it fails) -> 200 with
the record id. The XADD announcing the segment runs after the answers, with a short deadline:
a Redis outage never delays or fails acceptance; the sweeper finds unannounced segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from shopipe import metrics as core_metrics
from shopipe import shopify, stream
from shopipe.buffer import Buffer
from shopipe.config import ReceiverSettings
from shopipe.errors import ConfigError
from shopipe.httpops import ops_app
from shopipe.logs import get_logger
from shopipe.sentinel import MasterClient, RedisTarget
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shopipe_receiver import metrics
from shopipe_receiver.access import AccessLog, log_request
from shopipe_receiver.body import BodyError, read_body
from shopipe_receiver.groupcommit import GroupCommit

log = get_logger(__name__)

SERVICE = "receiver"
ANNOUNCE_DEADLINE = 3.0  # seconds; rides a short failover, else the sweeper takes over
MAX_PENDING_ANNOUNCES = 1000  # beyond this, skip (counted): memory must not grow in an outage


def _error(status: int, message: str, **extra: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": message, **extra}, separators=(",", ":")).encode()


async def _send(send: Send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Receiver:
    """Everything one receiver process holds; ``start``/``stop`` bracket its life."""

    def __init__(
        self,
        settings: ReceiverSettings,
        *,
        buffer: Buffer | None = None,
        redis: MasterClient | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = [s.get() for s in settings.shopify_secrets if s.get()]
        if not self.secrets:
            raise ConfigError("SHOPIPE_SHOPIFY_SECRETS holds no secret: every webhook would be 401")
        self._own_buffer = buffer is None
        self.buffer = buffer
        self.redis = redis
        self.commit: GroupCommit | None = None
        self.last_storage_ok: float | None = None
        self._announces: set[asyncio.Task[None]] = set()
        self.starlette = self._build()
        # Wrapped: uvicorn takes a bound method for an ASGI2 app, an object with an async
        # __call__ for ASGI3.
        self.app: ASGIApp = _Endpoint(self._asgi)

    # --- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.commit is not None:
            return
        s = self.settings
        if self.buffer is None:
            self.buffer = Buffer(s, concurrency=32)
        if self.redis is None:
            self.redis = MasterClient(RedisTarget.from_settings(s), service=SERVICE, pod=s.pod_name)
            self.redis.start_watch()
        self.commit = GroupCommit(
            self._put,
            max_records=s.segment_max_records,
            max_bytes=s.segment_max_bytes,
            max_wait=s.segment_max_wait_seconds,
            on_written=self._announce_later,
        )
        core_metrics.set_build_info(SERVICE)
        log.info("receiver started", extra={"path": s.webhook_path})

    async def stop(self) -> None:
        if self.commit is not None:
            await self.commit.close()
            self.commit = None
        if self._announces:
            await asyncio.wait(set(self._announces), timeout=ANNOUNCE_DEADLINE + 1)
        for task in list(self._announces):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.redis is not None:
            await self.redis.close()
            self.redis = None
        if self.buffer is not None and self._own_buffer:
            self.buffer.close()
            self.buffer = None
        log.info("receiver stopped; every open segment written")

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def pending_announces(self) -> int:
        """Announcements not finished yet (tests and /status)."""
        return len(self._announces)

    # --- storage and announcement --------------------------------------------------------------

    async def _put(self, key: str, data: bytes) -> None:
        assert self.buffer is not None
        await self.buffer.put_segment(key, data)
        self.last_storage_ok = time.time()

    def _announce_later(self, key: str, n: int) -> None:
        if len(self._announces) >= MAX_PENDING_ANNOUNCES:
            metrics.ANNOUNCE_FAILURES.inc()
            return
        task = asyncio.create_task(self._announce(key, n), name=f"announce:{key}")
        self._announces.add(task)
        task.add_done_callback(self._announces.discard)

    async def _announce(self, key: str, n: int) -> None:
        s, redis = self.settings, self.redis
        try:
            if redis is None:
                raise RuntimeError("redis client closed")
            async with asyncio.timeout(ANNOUNCE_DEADLINE + 0.5):
                await redis.call(
                    lambda r: stream.announce(r, s.stream, key, n, s.stream_maxlen),
                    deadline=ANNOUNCE_DEADLINE,
                )
        except Exception as e:
            metrics.ANNOUNCE_FAILURES.inc()
            log.warning(
                "announce failed; the sweeper will find the segment",
                extra={"key": key, "error": type(e).__name__},
            )

    # --- HTTP ----------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: a webhook POST goes straight to ``webhook``, the rest to Starlette.
        Starlette's request and response objects and middleware stack cost about as much CPU
        as the webhook's own work (measured in-process), and nearly every request is one."""
        if (
            scope["type"] == "http"
            and scope["path"] == self.settings.webhook_path
            and scope["method"] == "POST"
        ):
            await self.webhook(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)

    async def webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path: answer, then write the access line."""
        start = time.perf_counter()
        state: dict[str, str] = {}
        status = 500
        try:
            status, payload = await self._outcome(scope, receive, state)
            await _send(send, status, payload)
        finally:
            log_request(scope, status, start, state)

    async def _routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Through Starlette: its AccessLog middleware writes the line, from ``scope["state"]``."""
        status, payload = await self._outcome(scope, receive, scope.setdefault("state", {}))
        await _send(send, status, payload)

    async def _outcome(
        self, scope: Scope, receive: Receive, state: dict[str, str]
    ) -> tuple[int, bytes]:
        """The answer to one webhook, counted; ``state`` gets outcome, topic and record id."""
        start = time.perf_counter()
        try:
            status, payload = await self._handle(scope, receive, time.time(), state)
        except Exception:
            # A bug, never a payload: the traceback holds no body or header values.
            log.exception("webhook failed")
            return 500, b'{"error":"internal error"}'
        metrics.count(state["topic"], state["outcome"])
        metrics.REQUEST_SECONDS.observe(time.perf_counter() - start)
        return status, payload

    async def _handle(
        self, scope: Scope, receive: Receive, received_at: float, state: dict[str, str]
    ) -> tuple[int, bytes]:
        s = self.settings
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        state["topic"] = "unknown"
        try:
            body = await read_body(receive, raw, s.max_body_bytes, s.body_timeout_seconds)
        except BodyError as e:
            state["outcome"] = e.outcome
            return _error(e.status, str(e))
        found = shopify.shopify_headers_raw(raw)
        if not shopify.verify(body, shopify.signature_in(found), self.secrets):
            state["outcome"] = "unauthorized"
            return _error(401, "unauthorized")
        try:
            parsed = shopify.validate(found)
        except shopify.HeaderError as e:
            state["outcome"] = "bad_request"
            return _error(400, str(e), header=e.header)
        state["topic"] = parsed.topic
        if self.commit is None:
            state["outcome"] = "unavailable"
            return _error(503, "starting or stopping")
        try:
            stored = await self.commit.submit(
                shopify.record_headers_of(parsed, found), body, received_at
            )
        except Exception:
            # Anything failing the write is a 503: Shopify retries, and nothing was acknowledged.
            state["outcome"] = "unavailable"
            return _error(503, "storage unavailable")
        metrics.BODY_BYTES.observe(len(body))
        state["outcome"] = "accepted"
        state["record"] = stored.record_id
        # Record ids are [0-9a-f.:-] only (segment.record_id): no JSON escaping needed.
        return 200, b'{"ok":true,"id":"' + stored.record_id.encode() + b'"}'

    async def status(self) -> dict[str, Any]:
        return {
            "redis_master": self.redis.address if self.redis is not None else None,
            "last_storage_success": self.last_storage_ok,
            "segments_in_flight": self.commit.in_flight if self.commit is not None else 0,
            "announces_pending": self.pending_announces,
        }

    async def ready(self) -> bool:
        """Settings are valid (we run) and storage answered recently; Redis is not asked."""
        max_age = self.settings.ready_storage_max_age_seconds
        if self.last_storage_ok is not None and time.time() - self.last_storage_ok < max_age:
            return True
        if self.buffer is None:
            return False
        try:
            async with asyncio.timeout(min(max_age, 2.0)):
                await self.buffer.ping()
        except Exception:
            return False
        self.last_storage_ok = time.time()
        return True

    def _build(self) -> Starlette:
        ops = ops_app(SERVICE, self.status, self.ready)
        # Webhooks reach Starlette only when ``_asgi`` passes them on (a root_path, another
        # method: 405); the route keeps those answers Starlette's.
        webhook = Route(self.settings.webhook_path, _Endpoint(self._routed), methods=["POST"])
        routes = [webhook, *ops.routes]
        return Starlette(routes=routes, middleware=[Middleware(AccessLog)], lifespan=self.lifespan)


class _Endpoint:
    """An ASGI callable as an object: a route endpoint Starlette does not hand a Request, an
    app uvicorn does not take for ASGI2."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(settings: ReceiverSettings) -> ASGIApp:
    """The ASGI app uvicorn serves (lifespan starts and stops the receiver)."""
    return Receiver(settings).app
