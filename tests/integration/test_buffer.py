"""shopipe.buffer against real S3 (SeaweedFS): the calls the receiver and worker rely on."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import io
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import CommonSettings, load_settings
from shopipe.errors import StorageError, StorageUnavailable
from shopipe_devstack import Stack

pytestmark = pytest.mark.integration


def settings_for(stack: Stack, **extra: str) -> CommonSettings:
    return load_settings(CommonSettings, {**stack.info.service_env(), **extra})


@pytest.mark.asyncio
async def test_put_get_head_list_move_delete(bucket: Buffer) -> None:
    prefix = f"t-{uuid.uuid4().hex}/"
    keys = [f"{prefix}{i:03d}" for i in range(3)]
    for i, key in enumerate(keys):
        await bucket.put(key, b"data-%d" % i)
    assert await bucket.get(keys[1]) == b"data-1"
    info = await bucket.head(keys[2])
    assert info.size == 6
    listed = await bucket.list(prefix)
    assert [o.key for o in listed] == keys
    # The list's dates (ISO 8601, our fast parser) and HEAD's (an HTTP date, botocore's) agree.
    assert abs(listed[2].last_modified - info.last_modified) < 1.0
    assert abs(listed[2].last_modified - time.time()) < 300
    assert [o.key for o in await bucket.list(prefix, limit=2)] == keys[:2]
    assert [o.key for o in await bucket.list(prefix, start_after=keys[0])] == keys[1:]
    await bucket.move(keys[0], prefix + "moved")
    assert not await bucket.exists(keys[0])
    assert await bucket.get(prefix + "moved") == b"data-0"
    await bucket.copy(keys[1], prefix + "copy")
    assert await bucket.get(prefix + "copy") == b"data-1"
    await bucket.delete(keys[1])
    await bucket.delete(keys[1])  # idempotent
    with pytest.raises(ObjectMissing):
        await bucket.get(keys[1])
    with pytest.raises(ObjectMissing):
        await bucket.head(keys[1])


@pytest.mark.asyncio
async def test_list_pages_past_one_thousand_keys(bucket: Buffer) -> None:
    prefix = f"t-{uuid.uuid4().hex}/"
    await asyncio.gather(*(bucket.put(f"{prefix}{i:05d}", b"x") for i in range(1005)))
    listed = await bucket.list(prefix)
    assert len(listed) == 1005
    assert [o.key for o in listed] == sorted(o.key for o in listed)


@pytest.mark.asyncio
async def test_segment_and_json_round_trip(bucket: Buffer) -> None:
    key = segment.new_key()
    name = segment.name_of(key)
    data = segment.encode([segment.Record(segment.record_id(name, 0), 1.0, {"a": "b"}, b"\x00")])
    await bucket.put_segment(key, data)
    assert segment.decode(await bucket.get(key))[0].body == b"\x00"
    await bucket.put_json(f"t-{uuid.uuid4().hex}.json", {"b": 1, "a": [1, 2]})


@pytest.mark.asyncio
async def test_ping_and_ensure_bucket(stack: Stack) -> None:
    b = Buffer(settings_for(stack, SHOPIPE_S3_BUCKET=f"t-{uuid.uuid4().hex[:12]}"))
    try:
        with pytest.raises(StorageError) as e:
            await b.ping()
        assert not isinstance(e.value, StorageUnavailable | ObjectMissing)
        await b.ensure_bucket()
        await b.ping()
        await b.ensure_bucket()  # idempotent
    finally:
        b.close()


@pytest.mark.asyncio
async def test_bad_credentials_are_permanent(stack: Stack) -> None:
    b = Buffer(settings_for(stack, SHOPIPE_S3_SECRET_KEY="wrong"))
    try:
        with pytest.raises(StorageError) as e:
            await b.put("x", b"x")
        assert not isinstance(e.value, StorageUnavailable)
        assert "wrong" not in str(e.value)
    finally:
        b.close()


@pytest.mark.asyncio
async def test_unreachable_endpoint_is_transient(stack: Stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed on exit: nothing listens there
    b = Buffer(settings_for(stack, SHOPIPE_S3_ENDPOINT=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(StorageUnavailable):
            await b.put("x", b"x")
    finally:
        b.close()


class _Raw:
    """The raw body of a canned botocore response."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self.body


@pytest.mark.asyncio
async def test_delete_many_removes_in_one_request_with_content_md5(bucket: Buffer) -> None:
    keys = [f"incoming/many-{i:03d}.seg" for i in range(5)]
    for k in keys:
        await bucket.put(k, b"x")
    seen: list[tuple[str, bytes, str]] = []

    def observe(request: Any, **_: Any) -> None:
        md5 = request.headers.get("Content-MD5", b"")
        seen.append((request.method, request.body, md5.decode() if isinstance(md5, bytes) else md5))

    bucket.client.meta.events.register("before-send.s3.DeleteObjects", observe)
    failed = await bucket.delete_many([*keys, "incoming/never-written.seg"])
    assert failed == {}
    assert [await bucket.exists(k) for k in keys] == [False] * 5
    # One request for all six keys, carrying the MD5 S3-compatible stores require.
    assert len(seen) == 1
    _, body, md5 = seen[0]
    assert md5 == base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


@pytest.mark.asyncio
async def test_delete_many_falls_back_to_single_deletes_when_refused(bucket: Buffer) -> None:
    keys = [f"incoming/refused-{i}.seg" for i in range(3)]
    for k in keys:
        await bucket.put(k, b"x")
    refused: list[int] = []

    def refuse(request: Any, **_: Any) -> AWSResponse:
        # What a store without multi-object delete answers (fault injected at the HTTP layer).
        refused.append(1)
        body = b"<Error><Code>NotImplemented</Code><Message>no</Message></Error>"
        return AWSResponse(request.url, 501, HTTPHeaders(), _Raw(body))

    # A before-send handler may answer in place of the server (the stubs say None only).
    bucket.client.meta.events.register("before-send.s3.DeleteObjects", refuse)  # type: ignore[arg-type]
    assert await bucket.delete_many(keys[:2]) == {}
    assert await bucket.delete_many(keys[2:]) == {}
    assert [await bucket.exists(k) for k in keys] == [False] * 3
    assert len(refused) == 1  # refused once, then not asked again


@pytest.mark.asyncio
async def test_puts_failing_on_read_timeouts_leave_no_cycle_holding_the_body(
    stack: Stack,
) -> None:
    """botocore and urllib3 keep a failed request, its body and connection in reference cycles
    through the error's frames; shopipe.frames breaks them, so the body is freed at once by
    reference counting, with the cyclic collector off (issue 15 §1: RSS under a stalled store)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # accepts (the kernel does) and never answers
        b = Buffer(
            settings_for(
                stack,
                SHOPIPE_S3_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}",
                SHOPIPE_S3_READ_TIMEOUT_SECONDS="0.2",
                SHOPIPE_S3_MAX_ATTEMPTS="2",  # a retried attempt leaves its own cycle
            ),
            concurrency=2,
        )
        # 64 KiB: sent whole into the socket buffers, so each PUT fails on its read timeout.
        data = b"\x00" * (1 << 16) + uuid.uuid4().bytes

        async def fail(n: int) -> None:
            failed = 0
            for i in range(n):
                try:
                    await b.put(f"stalled-{i}", data)
                except StorageUnavailable:  # not kept: the test must not hold them
                    failed += 1
            assert failed == n

        gc.collect()
        gc.disable()
        try:
            await fail(1)  # the last failure may stay referenced (not garbage) until the next
            refs, copies = sys.getrefcount(data), _live(io.BytesIO)
            await fail(4)
            # No collection ran: nothing accumulated, every failed request was freed at once.
            assert sys.getrefcount(data) == refs
            assert _live(io.BytesIO) == copies
        finally:
            gc.enable()
            b.close()


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))
