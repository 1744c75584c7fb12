"""The receiver's Starlette app: verify, store durably, answer; announce off the critical path.

Order per webhook: read the body (cap, deadline) -> check the signature (401) -> validate the
headers (400 naming one) -> join a segment and wait for its PUT (503 if it fails) -> 200 with
the record id. The XADD announcing the segment runs after the answers, with a short deadline:
a Redis outage never delays or fails acceptance; the sweeper finds unannounced segments.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopipe_receiver import metrics
from shopipe_receiver.access import AccessLog
from shopipe_receiver.body import BodyError, read_body
from shopipe_receiver.groupcommit import GroupCommit

log = get_logger(__name__)

SERVICE = "receiver"
ANNOUNCE_DEADLINE = 3.0  # seconds; rides a short failover, else the sweeper takes over
MAX_PENDING_ANNOUNCES = 1000  # beyond this, skip (counted): memory must not grow in an outage


def _error(status: int, message: str, **extra: str) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


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
        self.app = self._build()

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

    async def webhook(self, request: Request) -> Response:
        start = time.perf_counter()
        received_at = time.time()
        response, outcome, topic = await self._handle(request, received_at)
        metrics.count(topic, outcome)
        metrics.REQUEST_SECONDS.observe(time.perf_counter() - start)
        request.state.outcome = outcome
        request.state.topic = topic
        return response

    async def _handle(self, request: Request, received_at: float) -> tuple[Response, str, str]:
        s = self.settings
        try:
            body = await read_body(request, s.max_body_bytes, s.body_timeout_seconds)
        except BodyError as e:
            return _error(e.status, str(e)), e.outcome, "unknown"
        found = shopify.shopify_headers(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
        )
        if not shopify.verify(body, shopify.signature_in(found), self.secrets):
            return _error(401, "unauthorized"), "unauthorized", "unknown"
        try:
            parsed = shopify.validate(found)
        except shopify.HeaderError as e:
            return _error(400, str(e), header=e.header), "bad_request", "unknown"
        if self.commit is None:
            return _error(503, "starting or stopping"), "unavailable", parsed.topic
        try:
            stored = await self.commit.submit(
                shopify.record_headers_of(parsed, found), body, received_at
            )
        except Exception:
            # Anything failing the write is a 503: Shopify retries, and nothing was acknowledged.
            return _error(503, "storage unavailable"), "unavailable", parsed.topic
        metrics.BODY_BYTES.observe(len(body))
        request.state.record = stored.record_id
        return JSONResponse({"ok": True, "id": stored.record_id}), "accepted", parsed.topic

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
        # The webhook route first: routes are matched in order, and it takes nearly every request.
        routes = [Route(self.settings.webhook_path, self.webhook, methods=["POST"]), *ops.routes]
        return Starlette(routes=routes, middleware=[Middleware(AccessLog)], lifespan=self.lifespan)


def create_app(settings: ReceiverSettings) -> Starlette:
    """The ASGI app uvicorn serves (lifespan starts and stops the receiver)."""
    return Receiver(settings).app
