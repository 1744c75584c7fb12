"""The stack's S3 is real: byte-exact round trips, credentials enforced, data survives a restart."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from shopipe_devstack import Stack
from shopipe_devstack.seaweed import s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


def _client(stack: Stack, access: str | None = None, secret: str | None = None) -> S3Client:
    info = stack.info
    return s3_client(info.s3_endpoint, access or info.s3_access_key, secret or info.s3_secret_key)


def test_put_get_list_delete_round_trip_is_byte_exact(stack: Stack) -> None:
    s3 = _client(stack)
    bucket = stack.info.s3_bucket
    prefix = f"test-roundtrip/{os.urandom(4).hex()}/"
    bodies = {
        f"{prefix}all-bytes": bytes(range(256)) * 4,
        # Past the filer's 4 MiB chunk size, and not a multiple of anything.
        f"{prefix}big": os.urandom(5 * 1024 * 1024 + 17),
        f"{prefix}empty": b"",
    }
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(bodies)
    assert {o["Key"]: o["Size"] for o in listed["Contents"]} == {
        k: len(v) for k, v in bodies.items()
    }
    for key in bodies:
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount") == 0
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key=f"{prefix}all-bytes")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


@pytest.mark.parametrize("which", ["secret", "access"])
def test_wrong_s3_credentials_are_refused(stack: Stack, which: str) -> None:
    bad = (
        _client(stack, secret="not-the-secret")
        if which == "secret"
        else _client(stack, access="NOSUCHACCESSKEY")
    )
    bucket = stack.info.s3_bucket
    for call in (
        lambda: bad.put_object(Bucket=bucket, Key="test-intruder", Body=b"x"),
        lambda: bad.list_objects_v2(Bucket=bucket),
        lambda: bad.head_bucket(Bucket=bucket),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    listed = _client(stack).list_objects_v2(Bucket=bucket, Prefix="test-intruder")
    assert listed.get("KeyCount") == 0


def test_s3_data_survives_stop_and_start(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    bucket = stack.info.s3_bucket
    body = os.urandom(100_000)
    _client(stack).put_object(Bucket=bucket, Key="incoming/keep.seg", Body=body)
    stack.stop_s3()
    with pytest.raises(EndpointConnectionError):
        _client(stack).head_bucket(Bucket=bucket)
    stack.start_s3()
    got = _client(stack).get_object(Bucket=bucket, Key="incoming/keep.seg")["Body"].read()
    assert got == body
