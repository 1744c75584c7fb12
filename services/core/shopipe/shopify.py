"""Shopify's side of a webhook: the HMAC signature and the headers.

Shopify signs the raw body only: ``X-Shopify-Hmac-Sha256`` is base64 (not hex) of HMAC-SHA256
over the exact bytes, keyed with the app's client secret. Several secrets are accepted so a
secret can be rotated without downtime. Headers come as ``X-Shopify-*`` or, newer, ``Shopify-*``.

Because only the body is signed, a captured body replayed with another topic header still passes
the signature check. That is why the topic and shop are validated strictly and never used in an
object key: a forged header can mislabel a record, never escape a prefix or overwrite one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from shopipe.errors import PermanentError

SIGNATURE = "hmac-sha256"
TOPIC = "topic"
SHOP = "shop-domain"
WEBHOOK_ID = "webhook-id"
API_VERSION = "api-version"
TRIGGERED_AT = "triggered-at"
EVENT_ID = "event-id"

# Shopify retries a delivery that got no 2xx 8 times over about 4 hours, then gives up: a
# done-marker must outlive the last retry (plus the backlog that may delay processing it).
RETRY_WINDOW_SECONDS = 4 * 3600

_PREFIXES = (b"x-shopify-", b"shopify-")
_TOPIC = re.compile(r"^[a-z0-9_]+(?:/[a-z0-9_]+){1,3}$")
_SHOP = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.myshopify\.com$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_API_VERSION = re.compile(r"^(?:[0-9]{4}-[0-9]{2}|unstable)$")
_TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)
# Other Shopify headers are kept as sent, within reason: printable ASCII, bounded length.
_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")
_MAX_EXTRA = 32


class HeaderError(PermanentError):
    """A Shopify header is missing, repeated or malformed (answered 400 naming it)."""

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"{header}: {problem}")
        self.header = header
        self.problem = problem


def sign(body: bytes, secret: str) -> str:
    """The header value Shopify would send for ``body``: base64 HMAC-SHA256."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(body: bytes, signature: str | None, secrets: Sequence[str]) -> bool:
    """True if ``signature`` is the HMAC of ``body`` under any of ``secrets`` (constant time)."""
    if not signature or not secrets:
        return False
    try:
        given = base64.b64decode(signature.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    if len(given) != hashlib.sha256().digest_size:
        return False
    ok = False
    # Every secret is tried, so timing does not tell which one (or whether one) matched.
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        ok |= hmac.compare_digest(expected, given)
    return ok


Found = dict[str, list[str]]  # Shopify headers by short name, values in order


def shopify_headers(headers: Iterable[tuple[bytes, bytes]]) -> Found:
    """Every Shopify header of ASGI's raw headers by short name (``topic``, ``hmac-sha256``...),
    values in order. Only the Shopify ones are decoded (latin-1, as HTTP/1.1 defines header
    bytes). Computed once per request: the signature, the checks and the record all read it."""
    out: dict[str, list[str]] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if not name.startswith(_PREFIXES):  # most headers: one C call, no loop
            continue
        for prefix in _PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                short = name[len(prefix) :].decode("latin-1")
                out.setdefault(short, []).append(value.decode("latin-1"))
                break
    return out


@functools.lru_cache(maxsize=256)  # bounded: the names come from requests
def canonical(short: str, *, newer: bool = False) -> str:
    """``api-version`` -> ``X-Shopify-API-Version``: the spelling errors and records use
    (``Shopify-API-Version`` with ``newer``, the spelling Shopify sends lately)."""
    parts = ("API" if p == "api" else p.capitalize() for p in short.split("-"))
    return ("Shopify-" if newer else "X-Shopify-") + "-".join(parts)


def is_shop(text: str) -> bool:
    """True for a ``*.myshopify.com`` domain, lower case: safe inside an object or Redis key
    (no glob character, no separator)."""
    return _SHOP.match(text) is not None


def _one(found: Mapping[str, list[str]], short: str, *, required: bool) -> str | None:
    values = found.get(short)
    if not values:
        if required:
            raise HeaderError(canonical(short), "missing")
        return None
    # Both spellings may be sent; they must agree, else which one was signed-for is unknown.
    if any(v != values[0] for v in values[1:]):
        raise HeaderError(canonical(short), "repeated with different values")
    return values[0].strip()


def signature_in(found: Found) -> str | None:
    """The signature header, or None when it is missing or given twice with different values."""
    try:
        return _one(found, SIGNATURE, required=False)
    except HeaderError:
        return None


@dataclass(frozen=True)
class WebhookHeaders:
    """The validated Shopify headers of one webhook."""

    topic: str
    shop: str
    webhook_id: str
    api_version: str | None = None
    triggered_at: str | None = None
    event_id: str | None = None

    def to_record(self) -> dict[str, str]:
        """Canonical ``X-Shopify-*`` headers to store with the record."""
        out = {
            canonical(TOPIC): self.topic,
            canonical(SHOP): self.shop,
            canonical(WEBHOOK_ID): self.webhook_id,
        }
        for short, value in (
            (API_VERSION, self.api_version),
            (TRIGGERED_AT, self.triggered_at),
            (EVENT_ID, self.event_id),
        ):
            if value is not None:
                out[canonical(short)] = value
        return out


def _check(value: str | None, pattern: re.Pattern[str], short: str, what: str) -> None:
    if value is not None and not pattern.match(value):
        raise HeaderError(canonical(short), f"not {what}")


def validate(found: Found) -> WebhookHeaders:
    """The validated Shopify headers (either spelling); HeaderError names the bad one."""
    topic = _one(found, TOPIC, required=True) or ""
    shop = _one(found, SHOP, required=True) or ""
    webhook_id = _one(found, WEBHOOK_ID, required=True) or ""
    api_version = _one(found, API_VERSION, required=False)
    triggered_at = _one(found, TRIGGERED_AT, required=False)
    event_id = _one(found, EVENT_ID, required=False)
    _check(topic, _TOPIC, TOPIC, "a topic like orders/create")
    _check(shop, _SHOP, SHOP, "a *.myshopify.com domain")
    _check(webhook_id, _ID, WEBHOOK_ID, "an id")
    _check(api_version, _API_VERSION, API_VERSION, "a version like 2025-07")
    _check(triggered_at, _TIMESTAMP, TRIGGERED_AT, "an ISO 8601 time")
    _check(event_id, _ID, EVENT_ID, "an id")
    return WebhookHeaders(topic, shop, webhook_id, api_version, triggered_at, event_id)


_SHORT = re.compile(r"^[a-z0-9-]{1,64}$")


_KNOWN = frozenset({TOPIC, SHOP, WEBHOOK_ID, API_VERSION, TRIGGERED_AT, EVENT_ID, SIGNATURE})


def record_headers(parsed: WebhookHeaders, found: Found) -> dict[str, str]:
    """The Shopify headers to store with a record: validated ones canonical, others as sent
    when they are single, printable and short (others are dropped, not refused).

    The signature is left out: it was checked, and a stored signature only helps a replay.
    """
    out = parsed.to_record()
    extra = 0
    for short, values in sorted(found.items()):
        if short in _KNOWN or extra >= _MAX_EXTRA:
            continue
        value = values[0].strip()
        if len(values) == 1 and _VALUE.match(value) and _SHORT.match(short):
            out[canonical(short)] = value
            extra += 1
    return out


# Realistic payloads shipped with the package, for `shopipe send`, tests and benchmarks.
SAMPLE_TOPICS = (
    "orders/create",
    "orders/updated",
    "products/update",
    "customers/redact",
    "customers/data_request",
    "shop/redact",
    "app/uninstalled",
)


def sample(topic: str) -> bytes:
    """The shipped sample body for ``topic`` (one of SAMPLE_TOPICS)."""
    if topic not in SAMPLE_TOPICS:
        raise KeyError(topic)
    name = topic.replace("/", "_") + ".json"
    return resources.files("shopipe").joinpath("samples", name).read_bytes()
