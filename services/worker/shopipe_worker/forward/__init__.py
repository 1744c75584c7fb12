"""The ``forward`` built-in handler: each webhook, as Shopify sent it, to the app's HTTP endpoint.

Enabled with ``forward`` in ``SHOPIPE_BUILTIN_HANDLERS`` and configured by the routes file
``SHOPIPE_FORWARD_ROUTES_FILE`` (``routes.py``). Each route is one handler, registered for its
topic patterns under the name ``forward:<route>``. Delivery is at least once: a record is
re-delivered when the worker retries it (the app deduplicates by ``X-Shopify-Webhook-Id``, as
Shopify already requires), but a route that took a webhook is not sent it again when only another
of the record's handlers failed, nor by a replay (the ``sent`` key, ``state.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from shopipe import segment
from shopipe.errors import ConfigError, PermanentError
from shopipe.logs import get_logger

from shopipe_worker.events import Event
from shopipe_worker.forward import breaker, delivery, limits, state
from shopipe_worker.forward import metrics as m
from shopipe_worker.forward.routes import SETTING, Route, load
from shopipe_worker.forward.saturation import HELD_SECONDS, Saturation, queue_seconds
from shopipe_worker.registry import Context, Handler, Registry

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from shopipe.sentinel import MasterClient

log = get_logger(__name__)


class RouteDisabled(PermanentError):
    """The route was disabled (its destination answered 410); `shopipe forward enable`."""

    reason = "forward_route_disabled"


# An idle connection to a destination is kept this long.
KEEPALIVE_SECONDS = 4.0


class Forwarder:
    """The handlers of every route, and the HTTP clients they share.

    The client is aiohttp's, not httpx's (the house client elsewhere): measured on this
    project's bench machine (16 deliveries in flight to a local destination), an httpx POST
    costs 4-6 ms of CPU, aiohttp's 0.2-0.3 ms. httpcore's pool checks every idle connection
    (a poll syscall each) twice a request, and without sniffio installed each of its locks
    tries a failing import (a sys.path scan) (encode/httpcore#1103).
    """

    def __init__(
        self,
        routes: tuple[Route, ...],
        shopify_secret: str | None,
        registry: Registry | None = None,
    ) -> None:
        self.routes = routes
        self.shopify_secret = shopify_secret
        # Whether the backlog waits on saturated routes, for the operator (saturation.py).
        self.saturation = Saturation(routes, registry or Registry())
        self._clients: dict[str, aiohttp.ClientSession] = {}
        # (segment, route) -> until when (monotonic s) a record of that segment on that route
        # does not wait for a slot: one record waited already, so the rest of the segment's
        # records on the route are deferred at once, not each after its own wait.
        self._throttled: dict[tuple[str, str], float] = {}

    def client(self, route: Route) -> aiohttp.ClientSession:
        got = self._clients.get(route.name)
        if got is None:
            connector = aiohttp.TCPConnector(
                limit=route.max_in_flight,
                limit_per_host=0,
                # Idle connections closed before Node's default keep-alive timeout (5 s) closes
                # them under a delivery (a failed try).
                keepalive_timeout=KEEPALIVE_SECONDS,
                # The CAs httpx trusts (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), as before
                # the switch; loading them costs ~45 ms, so only for https routes.
                ssl=httpx.create_ssl_context() if route.url.startswith("https:") else True,
            )
            got = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=route.timeout_seconds),
                # The answer's first bytes go raw into a dead letter; nothing else is read.
                auto_decompress=False,
                # A destination's cookies are not sent back with the next webhooks.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._clients[route.name] = got
        return got

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.close()

    def handler(self, route: Route) -> Handler:
        async def forward(event: Event, ctx: Context) -> None:
            await self.deliver(route, event, ctx)

        forward.__name__ = f"forward:{route.name}"
        return forward

    async def deliver(self, route: Route, event: Event, ctx: Context) -> None:
        keys = state.Keys(ctx.keys.prefix)
        ttl = ctx.settings.dedup_ttl_seconds
        name = route.name
        waiting = (ctx.keys.forward_waiting(), segment.parse_record_id(event.record_id)[0])
        # The record comes back after the worker's backoff (at most SHOPIPE_RETRY_MAX_SECONDS,
        # jittered) and may wait for a slot again: that long it counts as waiting.
        wait_for = ctx.settings.retry_max_seconds * 1.2 + limits.WAIT_SECONDS + 5.0
        asked = time.monotonic()
        try:
            # One round trip: sent already, disabled, the breaker, a Retry-After pause, the
            # limits across every worker. While the breaker is open (CircuitOpen) or no slot
            # comes (Throttled), the record is deferred: retried later, using up no attempt.
            lease = await limits.start(
                ctx.redis, keys, route, state.delivery_of(event), ttl, self._wait(waiting[1], name)
            )
        except breaker.CircuitOpen:
            m.BREAKER_OPEN.labels(route=name).set(1.0)
            m.DEFERRED.labels(route=name, reason="circuit_open").inc()
            await limits.note_waiting(ctx.redis, *waiting, wait_for)
            await self.saturation.note(ctx.redis, keys.prefix, name, wait_for)
            raise
        except limits.Throttled:
            self._throttled[(waiting[1], name)] = time.monotonic() + limits.WAIT_SECONDS
            m.DEFERRED.labels(route=name, reason="throttled").inc()
            await limits.note_waiting(ctx.redis, *waiting, wait_for)
            await self.saturation.note(ctx.redis, keys.prefix, name, HELD_SECONDS)
            raise
        waited = time.monotonic() - asked >= queue_seconds(route)  # noted once it is sent
        m.DISABLED.labels(route=name).set(float(lease is limits.Verdict.DISABLED))
        if lease is limits.Verdict.SENT:
            return  # an earlier try delivered it; another handler of the record failed
        if lease is limits.Verdict.DISABLED:
            raise RouteDisabled(f"route {name}: disabled (its destination answered 410)")
        m.BREAKER_OPEN.labels(route=name).set(float(lease.probe))
        try:
            await self._send(route, event, lease.attempt)
        except delivery.DestinationFailed as e:
            await lease.end(False, ttl, waiting)
            if e.retry_after is not None:
                wait = min(e.retry_after, route.retry_after_max_seconds)
                await state.pause(ctx.redis, keys, name, wait)
            if await breaker.failed(ctx.redis, keys.prefix, route) >= route.breaker_failures:
                m.BREAKER_OPEN.labels(route=name).set(1.0)
            if lease.probe:
                # A failed probe says the destination is still down, nothing about the record:
                # it waits like the others, its attempts untouched.
                m.DEFERRED.labels(route=name, reason="circuit_open").inc()
                await limits.note_waiting(ctx.redis, *waiting, wait_for)
                await self.saturation.note(ctx.redis, keys.prefix, name, wait_for)
                raise breaker.CircuitOpen(f"route {name}: probe failed") from e
            raise
        except delivery.DestinationRefused as e:
            await lease.end(False, ttl, waiting)
            await breaker.succeeded(ctx.redis, keys.prefix, route, lease.failures)  # it is up
            if isinstance(e, delivery.DestinationGone) and await state.disable(
                ctx.redis, keys, name, e.status
            ):
                m.DISABLES.labels(route=name).inc()
                m.DISABLED.labels(route=name).set(1.0)
                log.error("forward route disabled: destination answered 410", extra=extra(route))
            raise
        except BaseException:
            await lease.end(False, ttl, waiting)
            raise
        # The slot back, the webhook marked sent, a run of failures ended: one round trip.
        await lease.end(True, ttl, waiting)
        m.BREAKER_OPEN.labels(route=name).set(0.0)
        if lease.probe:
            await self.saturation.clear(ctx.redis, keys.prefix, name)
        elif waited:
            await self.saturation.note(ctx.redis, keys.prefix, name, HELD_SECONDS)

    def _wait(self, seg: str, route: str) -> float:
        """Seconds a record of segment ``seg`` may wait for a slot on ``route``: none while
        another record of the segment was just deferred for want of one."""
        now = time.monotonic()
        for k in [k for k, until in self._throttled.items() if until <= now]:
            del self._throttled[k]  # bounded: entries live WAIT_SECONDS
        return 0.0 if (seg, route) in self._throttled else limits.WAIT_SECONDS

    async def _send(self, route: Route, event: Event, attempt: int) -> None:
        """One delivery, counted in the metrics."""
        name = route.name
        m.IN_FLIGHT.labels(route=name).inc()
        started = time.perf_counter()
        try:
            sent = await delivery.send(
                self.client(route), route, event, attempt, self.shopify_secret
            )
        except delivery.DestinationFailed as e:
            m.DELIVERIES.labels(route=name, outcome="failed").inc()
            m.ANSWERS.labels(route=name, status_class=m.status_class(e.status)).inc()
            raise
        except delivery.DestinationRefused as e:
            gone = isinstance(e, delivery.DestinationGone)
            m.DELIVERIES.labels(route=name, outcome="gone" if gone else "refused").inc()
            m.ANSWERS.labels(route=name, status_class=m.status_class(e.status)).inc()
            raise
        finally:
            m.IN_FLIGHT.labels(route=name).dec()
            m.SECONDS.labels(route=name).observe(time.perf_counter() - started)
        m.DELIVERIES.labels(route=name, outcome="delivered").inc()
        m.ANSWERS.labels(route=name, status_class=m.status_class(sent.status)).inc()

    async def status(self, r: Redis, prefix: str) -> dict[str, Any]:
        """The routes' state for the worker's /status."""
        return await report(r, prefix, self.routes)


async def report(r: Redis, prefix: str, routes: tuple[Route, ...]) -> dict[str, Any]:
    """Each route: enabled or disabled, a Retry-After pause left, its breaker; for /status and
    `shopipe forward status`."""
    names = [route.name for route in routes]
    doc = await state.report(r, state.Keys(prefix), names)
    breakers = await breaker.states(r, prefix, list(routes))
    for name in names:
        doc[name]["breaker"] = "open" if breakers[name]["open"] else "closed"
        doc[name]["failures_in_a_row"] = int(breakers[name]["failures"])
    return doc


def extra(route: Route) -> dict[str, str]:
    return {"route": route.name}


def register(registry: Registry) -> None:
    s = registry.settings
    if s is None or not s.forward_routes_file:
        raise ConfigError(
            f"invalid configuration: the forward handler needs {SETTING} (docs/forwarding.md)"
        )
    secret = s.forward_shopify_secret.get() if s.forward_shopify_secret else None
    fwd = Forwarder(load(s.forward_routes_file), secret, registry)
    for route in fwd.routes:
        m.init(route.name)
        handler = fwd.handler(route)
        for pattern in route.topics:
            registry.add(pattern, handler, name=f"forward:{route.name}")
    registry.closers.append(fwd.close)
    prefix = s.key_prefix

    async def status(master: MasterClient) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = await master.call(lambda r: fwd.status(r, prefix), deadline=2.0)
        except Exception:
            return {"error": "redis unavailable"}  # /status answers whatever Redis does
        return doc

    registry.status_parts["forward"] = status
