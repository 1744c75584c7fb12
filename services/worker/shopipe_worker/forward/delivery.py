"""One HTTP delivery of a webhook to a route's destination, and what its answer means.

The request is the original one: the exact body bytes, the Shopify headers as stored with the
record, and ``X-Shopify-Hmac-Sha256`` computed over those bytes with the app's secret (the very
value Shopify sent: the receiver does not store signatures). Added: ``X-Shopipe-Record-Id``,
``X-Shopipe-Attempt``, ``X-Shopipe-Received-At``, the route's own headers, and with signing the
Standard Webhooks headers.

Answers: 2xx done; 408, 425, 429, 5xx, timeouts and connection errors transient (the worker
retries with its backoff); 410 disables the route; any other status is permanent (dead letter
with the status and a bounded excerpt of the answer).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from shopipe import shopify
from shopipe.errors import PermanentError, TransientError
from standardwebhooks import Webhook

from shopipe_worker.events import BadPayload, Event
from shopipe_worker.forward.routes import Route

TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Every error of a delivery says ``route <name>: ...``; a dead letter's error is
# ``<class>: <message>`` (processor.describe), so it names its route.
_ROUTE_IN_ERROR = re.compile(r"^\w+: route ([a-z0-9][a-z0-9_-]*): ")
EXCERPT_BYTES = 256
_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
_SHOPIFY = ("x-shopify-", "shopify-")


class DestinationFailed(TransientError):
    """The destination did not take the delivery, for a reason that may pass."""

    def __init__(
        self, route: str, what: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"route {route}: {what}")
        self.status = status  # None: no answer (timeout, connection error)
        self.retry_after = retry_after


class DestinationRefused(PermanentError):
    """The destination answered a status that retrying the same request cannot change."""

    reason = "forward_refused"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class DestinationGone(DestinationRefused):
    """410 Gone: the app says this endpoint is no more; the route is disabled."""

    reason = "forward_gone"


@dataclass(frozen=True)
class Sent:
    status: int
    seconds: float


def route_of(error: str) -> str | None:
    """The route a dead letter's error names (None: not a forward error), for
    ``shopipe dlq list|replay --route``."""
    found = _ROUTE_IN_ERROR.match(error)
    return found.group(1) if found else None


def excerpt(data: bytes) -> str:
    """A bounded, printable excerpt of an answer, for the dead letter (never a log)."""
    return _PRINTABLE.sub(b"?", data[:EXCERPT_BYTES]).decode("ascii")


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def request_headers(
    route: Route, event: Event, attempt: int, shopify_secret: str | None, now: float
) -> dict[str, str]:
    out = {"Content-Type": "application/json", **route.headers}
    for name, value in event.headers.items():
        if name.startswith(_SHOPIFY):
            short = name.split("-", 2)[2] if name.startswith("x-") else name.split("-", 1)[1]
            out[shopify.canonical(short)] = value
    if shopify_secret is not None:
        out[shopify.canonical(shopify.SIGNATURE)] = shopify.sign(event.body, shopify_secret)
    out["X-Shopipe-Record-Id"] = event.record_id
    out["X-Shopipe-Attempt"] = str(attempt)
    out["X-Shopipe-Received-At"] = _iso(event.received_at)
    if route.signing_secrets:
        out.update(standard_webhooks(route, event, now))
    return out


def standard_webhooks(route: Route, event: Event, now: float) -> dict[str, str]:
    """``webhook-id`` (Shopify's webhook id: the same on every retry, as the spec asks),
    ``webhook-timestamp`` (this attempt) and one ``v1`` signature per secret (rotation)."""
    msg_id = event.webhook_id or event.record_id
    at = datetime.fromtimestamp(int(now), UTC)
    try:
        text = event.body.decode("utf-8")  # the library signs text; Shopify sends UTF-8 JSON
    except UnicodeDecodeError as e:
        raise BadPayload(f"route {route.name}: body is not UTF-8, cannot sign") from e
    signatures = [Webhook(s.get()).sign(msg_id, at, text) for s in route.signing_secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": " ".join(signatures),
    }


async def send(
    session: aiohttp.ClientSession,
    route: Route,
    event: Event,
    attempt: int,
    shopify_secret: str | None,
) -> Sent:
    """POST ``event`` to ``route``; Sent on 2xx, else the error its answer means."""
    now = time.time()
    headers = request_headers(route, event, attempt, shopify_secret, now)
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(route.timeout_seconds),
            session.post(
                route.url, data=event.body, headers=headers, allow_redirects=False
            ) as resp,
        ):
            head = b""
            while len(head) < EXCERPT_BYTES:
                chunk = await resp.content.read(EXCERPT_BYTES - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError as e:
        raise DestinationFailed(route.name, "timed out") from e
    except aiohttp.ClientError as e:
        raise DestinationFailed(route.name, f"request failed ({type(e).__name__})") from e
    seconds = time.perf_counter() - started
    status = resp.status
    if 200 <= status < 300:
        return Sent(status, seconds)
    if status == 410:
        raise DestinationGone(f"route {route.name}: HTTP 410 Gone: {excerpt(head)}", status)
    if status in TRANSIENT_STATUSES or status >= 500:
        wait = retry_after(resp.headers.get("Retry-After"), now)
        raise DestinationFailed(route.name, f"HTTP {status}", status, wait)
    raise DestinationRefused(f"route {route.name}: HTTP {status}: {excerpt(head)}", status)
