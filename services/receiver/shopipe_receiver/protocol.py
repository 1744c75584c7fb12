"""HTTP limits enforced while the request head is parsed, before the app (and the HMAC) sees it.

uvicorn bounds none of this with httptools: it gathers every header of a head however many or
large, and waits for a head forever (its keep-alive timeout runs only between requests). So the
receiver serves HTTP with uvicorn's httptools protocol plus:
- more than SHOPIPE_HTTP_MAX_HEADERS header lines, or a head (request line and headers) larger
  than SHOPIPE_HTTP_MAX_HEADER_BYTES: 431 and the connection closed. Bytes are counted as they
  arrive, so a single header that never ends is cut too; at most one read (256 KiB) past the
  limit is ever buffered;
- a head not complete SHOPIPE_HTTP_HEAD_TIMEOUT_SECONDS after the connection opened (or after
  the first byte of a later request on a kept-alive connection): the connection is closed;
- requests refused by uvicorn's connection cap (``limit_concurrency``) are counted;
- each request's scope gets ``ARRIVED``: the event loop's time when the read holding the first
  bytes of its head was taken from the socket. The answer deadline counts from there, not from
  when the request's task first ran: on a loop short of CPU, the reads of many connections are
  handled before any of the tasks they create, and that wait was not in the deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shopipe_receiver import metrics

_REASON_431 = b"request header fields too large"
ARRIVED = "shopipe.arrived"  # scope key: loop time of the read that began the request head


@dataclass(frozen=True)
class HeadLimits:
    max_headers: int  # header lines
    max_header_bytes: int  # bytes of the request line and header lines
    head_timeout: float  # seconds


class _Refused(Exception):
    """Raised from a parser callback: httptools stops parsing at once."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` (set by ``protocol_for``)."""

    limits: ClassVar[HeadLimits]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_raw = 0  # bytes received since this head began (an upper bound)
        self._head_bytes = 0  # bytes of the request line and header lines parsed
        self._head_count = 0
        self._refused: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._read_at = self.loop.time()  # loop time of the read being handled
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._read_at = self.loop.time()
        if self._in_head:
            self._head_raw += len(data)
        super().data_received(data)
        # Still in the head after this read: every byte since it began is head.
        if (
            self._in_head
            and self._head_raw > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refused = "header_bytes"
            self.send_400_response("")

    # --- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()  # makes the scope
        cast(dict[str, Any], self.scope)[ARRIVED] = self._read_at
        self._in_head = True
        self._head_bytes = self._head_count = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse("header_bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_count > self.limits.max_headers:
            self._refuse("header_count")
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse("header_bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        # uvicorn's own test for its limit_concurrency 503, to count it.
        cap = self.limit_concurrency
        if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
            metrics.HTTP_REFUSED.labels(reason="connections").inc()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what arrives next is the next request's head
        self._head_raw = 0

    # --- refusals ------------------------------------------------------------------------------

    def _refuse(self, reason: str) -> None:
        self._refused = reason
        raise _Refused(reason)

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers a parser error with this; a refusal of ours is a 431 instead."""
        reason = self._refused
        if reason is None:
            super().send_400_response(msg)
            return
        self._disarm_head_timer()
        metrics.HTTP_REFUSED.labels(reason=reason).inc()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REASON_431), _REASON_431)
        )
        self.transport.close()

    # --- head deadline -------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_expired)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            metrics.HTTP_REFUSED.labels(reason="head_timeout").inc()
            self.transport.close()


def protocol_for(limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for uvicorn's ``http`` option (it takes a class, not an instance)."""
    return type("ReceiverHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
