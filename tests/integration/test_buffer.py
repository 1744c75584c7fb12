"""shopipe.buffer against real S3 (SeaweedFS): the calls the receiver and worker rely on."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from shopipe import segment
from shopipe.buffer import Buffer, ObjectMissing
from shopipe.config import CommonSettings, load_settings
from shopipe.devstack import Stack
from shopipe.errors import StorageError, StorageUnavailable

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
    assert all(o.last_modified > 0 for o in listed)
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
