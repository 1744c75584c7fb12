"""The ``forward`` built-in handler: each webhook, as Shopify sent it, to the app's HTTP endpoint.

Enabled with ``forward`` in ``SHOPIPE_BUILTIN_HANDLERS`` and configured by the routes file
``SHOPIPE_FORWARD_ROUTES_FILE`` (``routes.py``). Each route is one handler, registered for its
topic patterns under the name ``forward:<route>``. Delivery is at least once: a record is
re-delivered when the worker retries it (the app deduplicates by ``X-Shopify-Webhook-Id``, as
Shopify already requires), but a route that took a record is not sent it again when only another
of the record's handlers failed (the ``sent`` key, ``state.py``).
"""

from __future__ import annotations

import httpx
from shopipe.errors import ConfigError, PermanentError
from shopipe.logs import get_logger

from shopipe_worker.events import Event
from shopipe_worker.forward import delivery, limits, state
from shopipe_worker.forward.routes import SETTING, Route, load
from shopipe_worker.registry import Context, Handler, Registry

log = get_logger(__name__)


class RouteDisabled(PermanentError):
    """The route was disabled (its destination answered 410); `shopipe forward enable`."""

    reason = "forward_route_disabled"


class Forwarder:
    """The handlers of every route, and the HTTP clients they share."""

    def __init__(self, routes: tuple[Route, ...], shopify_secret: str | None) -> None:
        self.routes = routes
        self.shopify_secret = shopify_secret
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, route: Route) -> httpx.AsyncClient:
        got = self._clients.get(route.name)
        if got is None:
            limits = httpx.Limits(
                max_connections=route.max_in_flight, max_keepalive_connections=route.max_in_flight
            )
            got = httpx.AsyncClient(
                timeout=route.timeout_seconds, limits=limits, follow_redirects=False
            )
            self._clients[route.name] = got
        return got

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.aclose()

    def handler(self, route: Route) -> Handler:
        async def forward(event: Event, ctx: Context) -> None:
            await self.deliver(route, event, ctx)

        forward.__name__ = f"forward:{route.name}"
        return forward

    async def deliver(self, route: Route, event: Event, ctx: Context) -> None:
        keys = state.Keys(ctx.keys.prefix)
        ttl = ctx.settings.dedup_ttl_seconds
        now = await state.before(ctx.redis, keys, route.name, event.record_id)
        if now.sent:
            return  # an earlier try delivered it; another handler of the record failed
        if now.disabled:
            raise RouteDisabled(f"route {route.name} is disabled (its destination answered 410)")
        # In flight and rate across every worker; a Retry-After pause holds it too. Throttled
        # (a Deferred) when no slot comes: the record waits without using up an attempt.
        lease = await limits.acquire(ctx.redis, keys, route)
        try:
            attempt = await state.next_try(ctx.redis, keys, route.name, event.record_id, ttl)
            await delivery.send(self.client(route), route, event, attempt, self.shopify_secret)
        except delivery.DestinationGone:
            if await state.disable(ctx.redis, keys, route.name, 410):
                log.error(
                    "forward route disabled: destination answered 410", extra={"route": route.name}
                )
            raise
        except delivery.DestinationFailed as e:
            if e.retry_after is not None:
                wait = min(e.retry_after, route.retry_after_max_seconds)
                await state.pause(ctx.redis, keys, route.name, wait)
            raise
        finally:
            await lease.release()
        await state.mark_sent(ctx.redis, keys, route.name, event.record_id, ttl)


def register(registry: Registry) -> None:
    s = registry.settings
    if s is None or not s.forward_routes_file:
        raise ConfigError(
            f"invalid configuration: the forward handler needs {SETTING} (docs/forwarding.md)"
        )
    secret = s.forward_shopify_secret.get() if s.forward_shopify_secret else None
    fwd = Forwarder(load(s.forward_routes_file), secret)
    for route in fwd.routes:
        handler = fwd.handler(route)
        for pattern in route.topics:
            registry.add(pattern, handler, name=f"forward:{route.name}")
    registry.closers.append(fwd.close)
