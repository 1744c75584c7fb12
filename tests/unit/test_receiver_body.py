"""Reading a body from ASGI ``receive``: joined chunks, the cap, the deadline, disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from shopipe_receiver.body import (
    BadLength,
    BodyTimeout,
    BodyTooLarge,
    Disconnected,
    declared_length,
    read_body,
)
from starlette.types import Message, Receive

pytestmark = pytest.mark.unit


def receive_of(messages: Iterable[Message], then_wait: bool = False) -> Receive:
    """An ASGI receive giving ``messages`` in order, then (``then_wait``) nothing ever."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then_wait:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.asyncio
async def test_chunks_are_joined_in_order() -> None:
    receive = receive_of([chunk(b"ab", True), chunk(b"", True), chunk(b"cd", False)])
    assert await read_body(receive, [], 10, 1.0) == b"abcd"


@pytest.mark.asyncio
async def test_one_chunk_body_comes_back_whole() -> None:
    assert await read_body(receive_of([chunk(b"whole", False)]), [], 10, 1.0) == b"whole"


@pytest.mark.asyncio
async def test_growing_past_the_cap_stops_reading() -> None:
    receive = receive_of([chunk(b"x" * 6, True), chunk(b"x" * 6, True), chunk(b"never", False)])
    with pytest.raises(BodyTooLarge):
        await read_body(receive, [], 10, 1.0)


@pytest.mark.asyncio
async def test_declared_length_past_the_cap_is_refused_before_reading() -> None:
    with pytest.raises(BodyTooLarge):
        await read_body(receive_of([], then_wait=True), [(b"content-length", b"11")], 10, 5.0)


@pytest.mark.asyncio
async def test_a_stalled_body_times_out() -> None:
    with pytest.raises(BodyTimeout):
        await read_body(receive_of([chunk(b"ab", True)], then_wait=True), [], 10, 0.05)


@pytest.mark.asyncio
async def test_a_disconnect_mid_body_is_reported() -> None:
    with pytest.raises(Disconnected):
        await read_body(receive_of([chunk(b"ab", True)]), [], 10, 1.0)


def test_conflicting_or_malformed_lengths_are_refused() -> None:
    assert declared_length([(b"host", b"x")]) is None
    assert declared_length([(b"content-length", b"12"), (b"content-length", b"12")]) == 12
    two = [(b"content-length", b"1"), (b"content-length", b"2")]
    for bad in (two, [(b"content-length", b"-1")]):
        with pytest.raises(BadLength):
            declared_length(bad)
