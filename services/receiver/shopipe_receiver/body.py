"""Reading a request body with a size cap and a deadline, straight from ASGI ``receive``.

A declared Content-Length over the cap is refused before a byte is read; a chunked body that
grows past the cap is cut off as soon as it does; a body that trickles in is cut at the deadline.
Nothing past the cap is ever held in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.types import Receive


class BodyError(Exception):
    """The body could not be read; ``status`` and ``outcome`` say how to answer."""

    status = 400
    outcome = "bad_request"


class BodyTooLarge(BodyError):
    status = 413
    outcome = "too_large"


class BodyTimeout(BodyError):
    status = 408
    outcome = "timeout"


class BadLength(BodyError):
    pass


class Disconnected(BodyError):
    pass


def declared_length(raw_headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of ASGI ``headers`` (names lowercase), None if there is none."""
    values = [v for k, v in raw_headers if k == b"content-length"]
    if not values:
        return None
    # Several differing lengths make the framing ambiguous (request smuggling): refuse.
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise BadLength("bad Content-Length")
    return int(values[0])


async def _chunks(receive: Receive, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise Disconnected("client went away")
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > max_bytes:
            raise BodyTooLarge("body over the size cap")
        chunks.append(chunk)
        if not message.get("more_body", False):
            # The usual case is one chunk: return it without copying.
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(
    receive: Receive, raw_headers: Iterable[tuple[bytes, bytes]], max_bytes: int, deadline: float
) -> bytes:
    """The raw body, or a BodyError subclass."""
    length = declared_length(raw_headers)
    if length is not None and length > max_bytes:
        raise BodyTooLarge("body over the size cap")
    try:
        async with asyncio.timeout(deadline):
            return await _chunks(receive, max_bytes)
    except TimeoutError as e:
        raise BodyTimeout("body not received in time") from e
