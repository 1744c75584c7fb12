"""Reading a request body with a size cap and a deadline.

A declared Content-Length over the cap is refused before a byte is read; a chunked body that
grows past the cap is cut off as soon as it does; a body that trickles in is cut at the deadline.
Nothing past the cap is ever held in memory.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request


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


def declared_length(request: Request) -> int | None:
    values = [v for k, v in request.headers.raw if k.lower() == b"content-length"]
    if not values:
        return None
    # Several differing lengths make the framing ambiguous (request smuggling): refuse.
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise BadLength("bad Content-Length")
    return int(values[0])


async def read_body(request: Request, max_bytes: int, deadline: float) -> bytes:
    """The raw body, or a BodyError subclass."""
    length = declared_length(request)
    if length is not None and length > max_bytes:
        raise BodyTooLarge("body over the size cap")
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.stream():
                total += len(chunk)
                if total > max_bytes:
                    raise BodyTooLarge("body over the size cap")
                chunks.append(chunk)
    except TimeoutError as e:
        raise BodyTimeout("body not received in time") from e
    except ClientDisconnect as e:
        raise Disconnected("client went away") from e
    return b"".join(chunks)
