"""Which handlers run for which topic.

Patterns are Shopify topics with ``*`` standing for one whole part (``orders/*``); ``*`` alone
matches every topic. A topic no pattern matches has nothing to do and counts as done.

User code joins through ``SHOPIPE_HANDLERS=package.module``: the module defines
``register(registry)`` and adds its handlers there (docs/handlers.md). A handler is
``async def handler(event: Event, ctx: Context) -> None``; see ``Context`` for what it may use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shopipe.errors import ConfigError
from shopipe.stream import Keys

from shopipe_worker.events import Event

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from shopipe.buffer import Buffer
    from shopipe.config import WorkerSettings
    from shopipe.sentinel import MasterClient


@dataclass(frozen=True)
class Context:
    """What a handler may use.

    ``tx`` is a Redis MULTI transaction: queue writes on it *without awaiting them*
    (``ctx.tx.hset(...)``). They run in one EXEC together with the record's done-markers, so they
    apply exactly once or not at all. ``redis`` is for reads (and nothing that must be atomic
    with the record). ``store`` is the bucket, for handlers that write reports; anything outside
    Redis must be idempotent, because a crash after it and before EXEC runs the handler again.
    ``settings`` are the worker's.
    """

    redis: Redis
    tx: Pipeline
    keys: Keys
    store: Buffer | None
    settings: WorkerSettings


Handler = Callable[[Event, Context], Awaitable[None]]

_PART = re.compile(r"^[a-z0-9_]+$")


def check_pattern(pattern: str) -> tuple[str, ...]:
    parts = tuple(pattern.split("/"))
    if pattern != "*" and not all(p == "*" or _PART.match(p) for p in parts):
        raise ConfigError(f"bad topic pattern {pattern!r}: expected e.g. orders/create or orders/*")
    return parts


def matches(parts: tuple[str, ...], topic: str) -> bool:
    if parts == ("*",):
        return True
    got = topic.split("/")
    return len(got) == len(parts) and all(p in ("*", g) for p, g in zip(parts, got, strict=True))


Closer = Callable[[], Awaitable[None]]
StatusPart = Callable[["MasterClient"], Awaitable[dict[str, Any]]]


class Registry:
    """Handlers by topic pattern. ``settings`` are the worker's, for ``register`` functions
    that configure themselves from them (the forward handler's routes); ``closers`` run when
    the worker stops, ``status_parts`` add to its ``/status``."""

    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self._routes: list[tuple[tuple[str, ...], str, Handler]] = []
        self.settings = settings
        self.closers: list[Closer] = []
        self.status_parts: dict[str, StatusPart] = {}

    def add(self, pattern: str, handler: Handler, *, name: str = "") -> None:
        label = name or getattr(handler, "__name__", "handler")
        self._routes.append((check_pattern(pattern), label, handler))

    def on(self, *patterns: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``add`` for one or more patterns."""

        def deco(fn: Handler) -> Handler:
            for p in patterns:
                self.add(p, fn)
            return fn

        return deco

    def handlers_for(self, topic: str) -> list[tuple[str, Handler]]:
        """(name, handler) pairs in registration order; empty when nothing handles ``topic``."""
        return [(label, fn) for parts, label, fn in self._routes if matches(parts, topic)]

    def patterns(self) -> list[tuple[str, str]]:
        """(pattern, handler name) of every registration, in order."""
        return [("/".join(parts), label) for parts, label, _ in self._routes]

    def names(self) -> list[str]:
        return [f"{'/'.join(parts)} -> {label}" for parts, label, _ in self._routes]

    async def close(self) -> None:
        """Release what handlers hold (HTTP clients); once, when the worker stops."""
        closers, self.closers = self.closers, []
        for close in closers:
            await close()

    async def status(self, master: MasterClient) -> dict[str, Any]:
        return {name: await part(master) for name, part in self.status_parts.items()}

    def load_module(self, module: str) -> None:
        """Import ``module`` and call its ``register(registry)``; ConfigError if it cannot."""
        try:
            mod: Any = importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"SHOPIPE_HANDLERS: cannot import {module!r}") from e
        register = getattr(mod, "register", None)
        if not callable(register):
            raise ConfigError(f"SHOPIPE_HANDLERS: {module!r} has no register(registry)")
        register(self)


BUILTIN = {
    "state": "shopipe_worker.handlers.state",
    "compliance": "shopipe_worker.handlers.compliance",
    "forward": "shopipe_worker.forward",
}


def build(
    builtin: Iterable[str], modules: Iterable[str], settings: WorkerSettings | None = None
) -> Registry:
    """The registry of a worker: the enabled built-ins, then the user's modules in order."""
    reg = Registry(settings)
    for name in builtin:
        if name not in BUILTIN:
            raise ConfigError(
                f"SHOPIPE_BUILTIN_HANDLERS: unknown {name!r} (known: {', '.join(BUILTIN)})"
            )
        reg.load_module(BUILTIN[name])
    for module in modules:
        reg.load_module(module)
    return reg
