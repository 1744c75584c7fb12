"""The forward handler's routes: which topics go to which HTTP destination, and how.

Read from the file ``SHOPIPE_FORWARD_ROUTES_FILE`` (YAML, or JSON, which YAML reads too) and
validated at start like the settings: every problem is gathered into one ConfigError line that
names the route and key, unknown keys are refused (a typo must not pass silently), and no secret
value is ever echoed. The file::

    routes:
      app:                          # the route's name: metrics label, Redis keys, CLI
        topics: [orders/*, products/update]
        url: https://app.internal/webhooks
        timeout_seconds: 10
        max_in_flight: 8            # across every worker
        rate_per_second: 50         # across every worker; 0: no rate limit
        headers: {X-Env: prod}
        signing:                    # Standard Webhooks re-signing (optional)
          secrets: [whsec_...]      # first signs; several: rotation
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from shopipe.envparse import Secret
from shopipe.errors import ConfigError
from standardwebhooks import Webhook

from shopipe_worker.registry import check_pattern

SETTING = "SHOPIPE_FORWARD_ROUTES_FILE"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")
# Headers a route may not set: the delivery's own (Shopify's, shopipe's, the signature's) and
# the ones HTTP itself owns.
_RESERVED_PREFIXES = ("x-shopify-", "shopify-", "x-shopipe-", "webhook-")
_RESERVED = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Limit:
    """One numeric key of a route: its default and bounds, for validation and the docs."""

    default: float
    minimum: float
    maximum: float
    unit: str
    help: str
    integer: bool = False


NUMBERS: dict[str, Limit] = {
    "timeout_seconds": Limit(10.0, 0.1, 300.0, "seconds", "Whole request, connect to answer."),
    "max_in_flight": Limit(
        8, 1, 10_000, "requests", "Deliveries in flight at once, all workers.", integer=True
    ),
    "rate_per_second": Limit(
        # At most 1000: the shared limiter spaces starts by whole milliseconds.
        0.0,
        0.0,
        1000.0,
        "requests/s",
        "Most deliveries started per second; 0: no limit.",
    ),
    "retry_after_max_seconds": Limit(
        300.0, 0.0, 3600.0, "seconds", "A Retry-After longer than this is cut to it."
    ),
    "breaker_failures": Limit(
        5,
        1,
        1000,
        "failures",
        "Consecutive transient failures that open the breaker.",
        integer=True,
    ),
    "breaker_probe_seconds": Limit(
        10.0, 0.1, 3600.0, "seconds", "While open, one delivery is tried this often."
    ),
}
_KEYS = frozenset({"topics", "url", "headers", "signing", *NUMBERS})


@dataclass(frozen=True)
class Route:
    name: str
    topics: tuple[str, ...]
    url: str
    timeout_seconds: float = 10.0
    max_in_flight: int = 8
    rate_per_second: float = 0.0
    retry_after_max_seconds: float = 300.0
    breaker_failures: int = 5
    breaker_probe_seconds: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    # Standard Webhooks secrets (``whsec_`` + base64); empty: no re-signing.
    signing_secrets: tuple[Secret, ...] = ()

    def describe(self) -> str:
        """One line for `shopipe config check worker` (no secret, no header value)."""
        limits = f"max {self.max_in_flight} in flight"
        if self.rate_per_second:
            limits += f", {self.rate_per_second:g}/s"
        extra = f", headers {', '.join(sorted(self.headers))}" if self.headers else ""
        sign = (
            f", signed (Standard Webhooks, {len(self.signing_secrets)} secrets)"
            if self.signing_secrets
            else ""
        )
        return (
            f"{self.name}: {', '.join(self.topics)} -> {shown(self.url)} "
            f"(timeout {self.timeout_seconds:g} s, {limits}{extra}{sign})"
        )


def _number(name: str, key: str, value: Any, problems: list[str]) -> float | int | None:
    spec = NUMBERS[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"route {name}: {key} must be a number")
        return None
    if spec.integer and not float(value).is_integer():
        problems.append(f"route {name}: {key} must be a whole number")
        return None
    if not spec.minimum <= value <= spec.maximum:
        problems.append(
            f"route {name}: {key} must be between {spec.minimum:g} and {spec.maximum:g}"
        )
        return None
    return int(value) if spec.integer else float(value)


def shown(url: str) -> str:
    """``url`` fit to print: a user and password or a query string may hold a token (apps put
    their webhook secret there), so they are shown as ``***``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _url(name: str, value: Any, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"route {name}: url is required (http:// or https://)")
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"route {name}: url must be http:// or https:// with a host")
    return value


def _topics(name: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        problems.append(f"route {name}: topics must be a non-empty list of topic patterns")
        return ()
    for pattern in value:
        try:
            check_pattern(pattern)
        except ConfigError as e:
            problems.append(f"route {name}: {e}")
    return tuple(value)


def _headers(name: str, value: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append(f"route {name}: headers must map names to values")
        return {}
    out: dict[str, str] = {}
    for key, text in value.items():
        low = str(key).lower()
        if not isinstance(key, str) or not _HEADER.match(key):
            problems.append(f"route {name}: bad header name {str(key)[:64]!r}")
        elif low in _RESERVED or low.startswith(_RESERVED_PREFIXES):
            problems.append(f"route {name}: header {key} is set by the delivery itself")
        elif not isinstance(text, str) or not _VALUE.match(text):
            problems.append(f"route {name}: header {key} needs a printable value")
        else:
            out[key] = text
    return out


def _signing(name: str, value: Any, problems: list[str]) -> tuple[Secret, ...]:
    if not isinstance(value, dict) or set(value) - {"secrets"}:
        problems.append(f"route {name}: signing takes one key, secrets (a list)")
        return ()
    secrets = value.get("secrets")
    if not isinstance(secrets, list) or not secrets:
        problems.append(f"route {name}: signing.secrets must be a non-empty list")
        return ()
    if not all(isinstance(s, str) and s.startswith("whsec_") and len(s) > 20 for s in secrets):
        # The value is never echoed: it is a secret.
        problems.append(f"route {name}: signing.secrets must be whsec_ secrets (base64)")
        return ()
    for s in secrets:
        # Checked now: a secret that is no base64 would otherwise fail every delivery of the
        # route at signing, retried as transient until each is dead-lettered.
        try:
            base64.b64decode(s.removeprefix("whsec_"), validate=True)
            Webhook(s)
        except (binascii.Error, ValueError):
            problems.append(f"route {name}: a signing secret is not valid base64 after whsec_")
            return ()
    return tuple(Secret(s) for s in secrets)


def _route(name: str, raw: Any, problems: list[str]) -> Route | None:
    if not _NAME.match(name):
        problems.append(f"bad route name {name[:64]!r}: lower case letters, digits, - and _")
        return None
    if not isinstance(raw, dict):
        problems.append(f"route {name}: expected a mapping of keys")
        return None
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        problems.append(
            f"route {name}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})"
        )
    before = len(problems)
    numbers = {k: _number(name, k, raw[k], problems) for k in NUMBERS if k in raw}
    route = Route(
        name=name,
        topics=_topics(name, raw.get("topics"), problems),
        url=_url(name, raw.get("url"), problems),
        headers=_headers(name, raw.get("headers", {}), problems),
        signing_secrets=_signing(name, raw["signing"], problems) if "signing" in raw else (),
        **{k: v for k, v in numbers.items() if v is not None},  # type: ignore[arg-type]
    )
    return route if len(problems) == before and not unknown else None


def parse(data: Any) -> tuple[Route, ...]:
    """Routes from the parsed file; ConfigError naming every problem."""
    problems: list[str] = []
    routes: list[Route] = []
    if not isinstance(data, dict) or not isinstance(data.get("routes"), dict):
        problems.append("expected a mapping with a key routes: {name: {...}}")
    else:
        unknown = sorted(str(k) for k in data if k != "routes")
        if unknown:
            problems.append(f"unknown top-level keys {', '.join(unknown)} (known: routes)")
        for name, raw in data["routes"].items():
            route = _route(str(name), raw, problems)
            if route is not None:
                routes.append(route)
        if not data["routes"]:
            problems.append("no route defined")
    if problems:
        raise ConfigError(f"invalid configuration: {SETTING}: " + "; ".join(problems))
    return tuple(routes)


def load(path: str) -> tuple[Route, ...]:
    """Read and validate the routes file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"invalid configuration: {SETTING}: cannot read {path!r}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # The parser's message may quote the file's lines (secrets): only its position.
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"invalid configuration: {SETTING}: not YAML or JSON{where}") from e
    return parse(data)
