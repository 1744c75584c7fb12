"""`shopipe forward status|enable`, and the forward routes in `shopipe config check worker`."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from shopipe.config import WorkerSettings
from shopipe.errors import ConfigError
from shopipe.sentinel import MasterClient, RedisTarget

from shopipe_worker.forward import state
from shopipe_worker.forward.routes import SETTING, Route, load


def describe_config(settings: Any) -> list[str]:
    """Lines for `shopipe config check worker`: the routes, validated (ConfigError if not)."""
    if not isinstance(settings, WorkerSettings) or not settings.forward_routes_file:
        return []
    routes = load(settings.forward_routes_file)
    return [f"forward routes ({settings.forward_routes_file}):"] + [
        f"  {r.describe()}" for r in routes
    ]


def _routes(s: WorkerSettings) -> tuple[Route, ...]:
    if not s.forward_routes_file:
        raise ConfigError(f"invalid configuration: {SETTING} is not set")
    return load(s.forward_routes_file)


async def _on_master(s: WorkerSettings, fn: Any) -> Any:
    master = MasterClient(RedisTarget.from_settings(s), service="worker", pod=f"{s.pod_name}-cli")
    try:
        return await master.call(fn, deadline=max(10.0, 5 * s.redis_timeout_seconds))
    finally:
        await master.close()


def status(s: WorkerSettings, as_json: bool) -> int:
    from shopipe_worker.forward import report  # the handler's imports only where used

    routes = _routes(s)
    doc: dict[str, Any] = asyncio.run(_on_master(s, lambda r: report(r, s.key_prefix, routes)))
    if as_json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    for route in routes:
        one = doc[route.name]
        print(
            f"{route.name:20} {one['state']:9} breaker {one['breaker']:6} "
            f"({one['failures_in_a_row']} failures in a row), paused {one['paused_seconds']:.1f} s"
        )
    return 0


def enable(s: WorkerSettings, route: str) -> int:
    if route not in {r.name for r in _routes(s)}:
        raise ConfigError(f"no route {route!r} in {SETTING}")
    keys = state.Keys(s.key_prefix)
    was = asyncio.run(_on_master(s, lambda r: state.enable(r, keys, route)))
    print(f"route {route}: {'enabled again' if was else 'was not disabled'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Any) -> None:
    p = sub.add_parser("forward", help="The forward handler's routes: status, enable.")
    fsub = p.add_subparsers(dest="forward_command", metavar="ACTION", required=True)
    sp = fsub.add_parser("status", help="Each route: enabled or disabled, paused.")
    sp.add_argument("--json", action="store_true", help="One JSON object.")
    sp.set_defaults(func=lambda a: status(settings(), a.json))
    ep = fsub.add_parser("enable", help="Re-enable a route disabled by a 410 answer.")
    ep.add_argument("route")
    ep.set_defaults(func=lambda a: enable(settings(), a.route))
