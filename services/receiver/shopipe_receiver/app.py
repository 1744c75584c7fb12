"""The receiver's Starlette app: verify, store durably, answer; announce off the critical path.

Order per webhook: take the body's bytes from the memory budget (503 at once if they do not
fit) -> read the body (cap, deadline) -> check the signature (401) -> validate the headers (400
naming one) -> join a segment and wait for its PUT (503 if it fails) -> 200 with the record id.
Every answer leaves within SHOPIPE_ANSWER_DEADLINE_SECONDS of the read that brought the request's
head (its start, as far as the receiver can see): a segment not durable by then is a 503 (a PUT
that succeeds later is harmless: Shopify retries, and the worker's done-markers skip the second
copy). The XADD announcing the segment runs after the
answers, with a short deadline: a Redis outage never delays or fails acceptance; the sweeper
finds unannounced segments.
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
from shopipe.httpops import OpsServer, ops_app, serve
from shopipe.logs import get_logger
from shopipe.sentinel import MasterClient, RedisTarget
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shopipe_receiver import metrics
from shopipe_receiver.access import AccessLog, log_request
from shopipe_receiver.body import BodyError, BodyTooLarge, declared_length, read_body
from shopipe_receiver.budget import BodyBudget, Held
from shopipe_receiver.groupcommit import GroupCommit
from shopipe_receiver.protocol import ARRIVED

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
        self.budget = BodyBudget(settings.max_body_bytes_in_memory)
        # Set by a 503 for lack of capacity (deadline, memory) or a failed PUT; cleared by
        # /readyz once the store answers and no segment waits for a PUT slot.
        self.shedding = False
        self._announces: set[asyncio.Task[None]] = set()
        self._ops_server: OpsServer | None = None
        self.ops = ops_app(SERVICE, self.status, self.ready)
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
            # A thread per PUT slot, and room for /readyz's ping beside them.
            self.buffer = Buffer(s, concurrency=s.max_puts_in_flight + 4)
        if self.redis is None:
            self.redis = MasterClient(RedisTarget.from_settings(s), service=SERVICE, pod=s.pod_name)
            self.redis.start_watch()
        self.commit = commit = GroupCommit(
            self._put,
            max_records=s.segment_max_records,
            max_bytes=s.segment_max_bytes,
            max_wait=s.segment_max_wait_seconds,
            max_puts=s.max_puts_in_flight,
            budget=self.budget,
            on_written=self._announce_later,
        )
        metrics.watch(lambda: commit.in_flight, lambda: self.budget.held, lambda: self.shedding)
        core_metrics.set_build_info(SERVICE)
        log.info("receiver started", extra={"path": s.webhook_path})

    async def serve_ops(self) -> None:
        """Open the ops listener (SHOPIPE_OPS_PORT), once the webhook port listens: its /readyz
        must not call the pod ready while webhooks would still be refused."""
        s = self.settings
        if s.ops_port is None or self._ops_server is not None:
            return
        # Its own listener, so a public webhook port (a LoadBalancer) exposes no /metrics or
        # /status; the NetworkPolicy admits only Prometheus and the operator to this one.
        self._ops_server = await serve(self.ops, s.http_host, s.ops_port)
        log.info("ops endpoints served", extra={"port": self._ops_server.port})

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
        if self._ops_server is not None:
            await self._ops_server.stop()
            self._ops_server = None
        log.info("receiver stopped; every open segment written")

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def ops_port(self) -> int | None:
        """The bound port of the ops listener (SHOPIPE_OPS_PORT may be 0); None: none runs."""
        return self._ops_server.port if self._ops_server is not None else None

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
        loop = asyncio.get_running_loop()
        # From the read that brought the request's head (our protocol stamps it), else now.
        deadline = scope.get(ARRIVED, loop.time()) + s.answer_deadline_seconds
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        state["topic"] = "unknown"
        try:
            length = declared_length(raw)
            if length is not None and length > s.max_body_bytes:
                raise BodyTooLarge("body over the size cap")
        except BodyError as e:
            state["outcome"] = e.outcome
            return _error(e.status, str(e))
        # A chunked body (no length) takes the whole cap, given back down to its size once read.
        if self._behind():
            return self._shed(state, "storage slower than the answer deadline")
        held = Held(s.max_body_bytes if length is None else length)
        if not self.budget.take(held.n):
            return self._shed(state, "over the memory budget")
        try:
            return await self._read_and_store(receive, raw, received_at, state, deadline, held)
        finally:
            self.budget.give(held.n)  # zero once a segment took the bytes: its PUT gives them

    async def _read_and_store(
        self,
        receive: Receive,
        raw: list[tuple[bytes, bytes]],
        received_at: float,
        state: dict[str, str],
        deadline: float,
        held: Held,
    ) -> tuple[int, bytes]:
        s, loop = self.settings, asyncio.get_running_loop()
        try:
            timeout = min(s.body_timeout_seconds, deadline - loop.time())
            body = await read_body(receive, raw, s.max_body_bytes, timeout)
        except BodyError as e:
            state["outcome"] = e.outcome
            return _error(e.status, str(e))
        found = shopify.shopify_headers(raw)
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
        if loop.time() >= deadline:
            return self._shed(state, "answer deadline passed")
        if self._behind():
            return self._shed(state, "storage slower than the answer deadline")
        self.budget.give(held.n - len(body))
        held.n = 0  # the segment holds the body now, and gives its bytes back
        wait = asyncio.timeout_at(deadline)
        try:
            async with wait:
                stored = await self.commit.submit(
                    shopify.record_headers(parsed, found), body, received_at, held=len(body)
                )
        except Exception:
            if wait.expired():
                return self._shed(state, "answer deadline passed")
            # Anything failing the write is a 503: Shopify retries, and nothing was acknowledged.
            self.shedding = True
            state["outcome"] = "unavailable"
            return _error(503, "storage unavailable")
        metrics.BODY_BYTES.observe(len(body))
        state["outcome"] = "accepted"
        state["record"] = stored.record_id
        # Record ids are [0-9a-f.:-] only (segment.record_id): no JSON escaping needed.
        return 200, b'{"ok":true,"id":"' + stored.record_id.encode() + b'"}'

    def _behind(self) -> bool:
        """The store is too slow for a webhook taken now to be durable by its deadline: 503 at
        once, not after holding its body until then (memory stays flat; Shopify retries)."""
        return self.commit is not None and self.commit.behind(self.settings.answer_deadline_seconds)

    def _shed(self, state: dict[str, str], why: str) -> tuple[int, bytes]:
        """503 for lack of capacity: Shopify retries later, /readyz turns unready meanwhile."""
        if not self.shedding:
            log.warning("shedding load: answering 503", extra={"reason": why})
        self.shedding = True
        state["outcome"] = "overloaded"
        return _error(503, why)

    async def status(self) -> dict[str, Any]:
        commit = self.commit
        return {
            "redis_master": self.redis.address if self.redis is not None else None,
            "last_storage_success": self.last_storage_ok,
            "segments_in_flight": commit.in_flight if commit is not None else 0,
            "segments_in_flight_peak": commit.peak_in_flight if commit is not None else 0,
            "segments_waiting": commit.waiting if commit is not None else 0,
            "body_bytes_held": self.budget.held,
            "body_bytes_held_peak": self.budget.peak,
            "shedding": self.shedding,
            "announces_pending": self.pending_announces,
        }

    async def ready(self) -> bool:
        """Settings are valid (we run) and storage answered recently; Redis is not asked.
        While shedding, unready until the store answers again and no segment waits for a PUT
        slot (the Service sends the traffic to other receivers meanwhile)."""
        max_age = self.settings.ready_storage_max_age_seconds
        if self.shedding:
            if self.commit is None or self.commit.saturated or not await self._ping(max_age):
                return False
            self.shedding = False
            self.commit.recovered()
            log.info("store answers again: ready, no longer shedding")
            return True
        if self.last_storage_ok is not None and time.time() - self.last_storage_ok < max_age:
            return True
        return await self._ping(max_age)

    async def _ping(self, max_age: float) -> bool:
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
        # Webhooks reach Starlette only when ``_asgi`` passes them on (a root_path, another
        # method: 405); the route keeps those answers Starlette's.
        webhook = Route(self.settings.webhook_path, _Endpoint(self._routed), methods=["POST"])
        routes: list[BaseRoute] = [webhook]
        # With an ops port, the webhook port keeps only the health checks: a load balancer's
        # (the NodeBalancer's check path) and the kubelet's probe the listener Shopify uses.
        # /metrics and /status stay off it: it may be public.
        health = ("/healthz", "/readyz")
        for route in self.ops.routes:
            if self.settings.ops_port is None or getattr(route, "path", "") in health:
                routes.append(route)
        return Starlette(routes=routes, middleware=[Middleware(AccessLog)], lifespan=self.lifespan)


class _Endpoint:
    """An ASGI callable as an object: a route endpoint Starlette does not hand a Request, an
    app uvicorn does not take for ASGI2."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
