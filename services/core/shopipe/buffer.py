"""The bucket: the source of truth. boto3 behind a small async API.

One boto3 client per process (clients are thread-safe and pool their connections), with bounded
connect/read timeouts and retries so a call cannot outlive Shopify's 5 seconds by much. Blocking
calls run on a dedicated thread pool sized like the connection pool, never on the event loop.

Errors: ``StorageUnavailable`` (transient: connection, timeout, 5xx, throttling),
``StorageError`` (permanent: credentials, missing bucket) and its subclass ``ObjectMissing``
(the key does not exist). The message names the operation and the S3 code, never a body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.session
from botocore import exceptions as bex
from botocore.config import Config
from botocore.utils import parse_timestamp

from shopipe.config import CommonSettings
from shopipe.errors import StorageError, StorageUnavailable
from shopipe.frames import release_frames

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "TooManyRequests",
    "503",
    "500",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DELETE_BATCH = 1000  # the most keys S3 takes in one DeleteObjects
# Answers of a store that cannot do DeleteObjects as botocore sends it.
_NO_BATCH = {"NotImplemented", "MissingContentMD5", "InvalidDigest", "InvalidRequest", "501"}


def _code(e: bex.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _release_attempt(caught_exception: BaseException | None = None, **_: Any) -> None:
    """After each attempt that failed: an attempt retried is no longer in the error that
    reaches the caller (``_call`` releases that one), so its frames are released here."""
    if caught_exception is not None:
        release_frames(caught_exception)


def _call(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    """``fn(**kwargs)`` on the pool's thread. A failed S3 call leaves its request and body in
    reference cycles through the error's frames (shopipe.frames): they are broken here, so a
    stalled store does not fill memory with failed PUTs until the cyclic collector runs."""
    try:
        return fn(**kwargs)
    except BaseException as e:
        release_frames(e)
        raise


def _content_md5(request: Any, **_: Any) -> None:
    """DeleteObjects needs Content-MD5 on S3-compatible stores (Ceph, MinIO); botocore 1.36+
    sends a CRC32 instead, so add the MD5 as well (AWS accepts both)."""
    body = request.body
    if isinstance(body, bytes) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode()


class ObjectMissing(StorageError):
    """The key does not exist (already processed, moved, or never written)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # epoch seconds


def classify(op: str, e: Exception) -> Exception:
    """Map a boto3/botocore error to shopipe's kinds (the caller raises it ``from e``)."""
    if isinstance(e, bex.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_CODES and op != "head_bucket":
            return ObjectMissing(f"s3 {op}: no such key")
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return StorageUnavailable(f"s3 {op}: {code or status}")
        return StorageError(f"s3 {op}: {code or status}")
    if isinstance(e, bex.ConnectionError | bex.HTTPClientError):
        return StorageUnavailable(f"s3 {op}: {type(e).__name__}")
    if isinstance(e, bex.BotoCoreError):
        return StorageError(f"s3 {op}: {type(e).__name__}")
    return StorageUnavailable(f"s3 {op}: {type(e).__name__}")


def _timestamp(value: str) -> datetime:
    """botocore's timestamp parser, fast for the dates S3 lists: botocore's own (dateutil) took
    ~0.3 ms a LastModified on the loaded 2-core machine, so ~0.3 s of CPU per 1,000-key
    ListObjectsV2 page (12 % of a sweeping worker's CPU); ``fromisoformat`` reads that form in
    about a microsecond. Other forms (header dates, epoch numbers) go to botocore's parser."""
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:  # a date without a zone: botocore's rules decide
                return parsed
    return parse_timestamp(value)


def make_client(settings: CommonSettings, max_pool_connections: int = 16) -> S3Client:
    """The shared S3 client, configured from settings."""
    custom = bool(settings.s3_endpoint)
    config = Config(
        connect_timeout=settings.s3_connect_timeout_seconds,
        read_timeout=settings.s3_read_timeout_seconds,
        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
        max_pool_connections=max_pool_connections,
        # S3-compatible stores (Linode, SeaweedFS) want path style and reject the newer
        # default flexible checksums; integrity comes from Content-MD5 on every PUT instead.
        s3={"addressing_style": "path"} if custom else {},
        request_checksum_calculation="when_required" if custom else "when_supported",
        response_checksum_validation="when_required" if custom else "when_supported",
    )
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    session = boto3.session.Session(botocore_session=core)
    client: S3Client = session.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get(),
        aws_secret_access_key=settings.s3_secret_key.get(),
        config=config,
    )
    client.meta.events.register("before-sign.s3.DeleteObjects", _content_md5)
    client.meta.events.register("needs-retry.s3", _release_attempt)
    return client


class Buffer:
    """Async access to the segment bucket. ``close()`` stops the thread pool."""

    def __init__(self, settings: CommonSettings, *, concurrency: int = 16) -> None:
        self.bucket = settings.s3_bucket
        self.client = make_client(settings, max_pool_connections=concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3")
        self._single_deletes = False

    async def _run(self, op: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, _call, fn, kwargs)
        except (bex.BotoCoreError, bex.ClientError) as e:
            raise classify(op, e) from e

    async def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Write ``data`` whole under ``key``: S3 PUTs are atomic and Content-MD5 makes the
        store refuse a body that arrived damaged, so there is never a half-written object."""

        def write() -> None:
            # Hashed on the pool's thread: hashlib lets go of the GIL, the event loop runs on.
            md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5, ContentType=content_type
            )

        await self._run("put", write)

    async def put_segment(self, key: str, data: bytes) -> None:
        """Write an encoded segment (``shopipe.segment.encode``) under its key."""
        await self.put(key, data, "application/vnd.shopipe.segment")

    async def put_json(self, key: str, obj: Any) -> None:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
        await self.put(key, data, "application/json")

    async def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if there is none."""

        def read() -> bytes:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            body: bytes = resp["Body"].read()
            return body

        return await self._run("get", read)

    async def head(self, key: str) -> ObjectInfo:
        resp = await self._run("head", self.client.head_object, Bucket=self.bucket, Key=key)
        return ObjectInfo(key, int(resp["ContentLength"]), resp["LastModified"].timestamp())

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectMissing:
            return False
        return True

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str = ""
    ) -> list[ObjectInfo]:
        """Objects under ``prefix`` in key order (oldest segment first), at most ``limit``."""

        def walk() -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            token: str | None = None
            # Bounded: each page advances the listing; S3 ends it with IsTruncated false.
            while limit is None or len(out) < limit:
                kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
                kw["MaxKeys"] = 1000 if limit is None else min(1000, limit - len(out))
                if token:
                    kw["ContinuationToken"] = token
                elif start_after:
                    kw["StartAfter"] = start_after
                resp = self.client.list_objects_v2(**kw)
                for obj in resp.get("Contents", []):
                    out.append(
                        ObjectInfo(obj["Key"], int(obj["Size"]), obj["LastModified"].timestamp())
                    )
                token = resp.get("NextContinuationToken")
                if not resp.get("IsTruncated") or not token:
                    break
            return out if limit is None else out[:limit]

        return await self._run("list", walk)

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key succeeds (S3 semantics), so it is idempotent."""
        await self._run("delete", self.client.delete_object, Bucket=self.bucket, Key=key)

    async def delete_many(self, keys: Sequence[str]) -> dict[str, Exception]:
        """Remove ``keys`` with one DeleteObjects per 1000; returns the keys not removed, with
        why. Missing keys count as removed. A store without DeleteObjects (or refusing its
        checksum) gets one DELETE per key from then on."""
        failed: dict[str, Exception] = {}
        for start in range(0, len(keys), _DELETE_BATCH):
            chunk = keys[start : start + _DELETE_BATCH]
            if self._single_deletes:
                failed |= await self._delete_each(chunk)
                continue
            try:
                errors = await self._run("delete_many", self._delete_objects, keys=chunk)
            except (StorageError, StorageUnavailable) as e:
                cause = e.__cause__
                if not isinstance(cause, bex.ClientError) or _code(cause) not in _NO_BATCH:
                    raise
                self._single_deletes = True  # the store refuses the request, not one key
                failed |= await self._delete_each(chunk)
                continue
            for err in errors:
                code = str(err.get("Code", ""))
                exc = StorageUnavailable if code in _TRANSIENT_CODES else StorageError
                failed[str(err.get("Key", ""))] = exc(f"s3 delete_many: {code}")
        return failed

    def _delete_objects(self, keys: Sequence[str]) -> Sequence[Any]:
        resp = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
        )
        return resp.get("Errors", [])

    async def _delete_each(self, keys: Sequence[str]) -> dict[str, Exception]:
        failed: dict[str, Exception] = {}
        for key in keys:
            try:
                await self.delete(key)
            except StorageError as e:
                failed[key] = e
        return failed

    async def copy(self, src: str, dst: str) -> None:
        await self._run(
            "copy",
            self.client.copy_object,
            Bucket=self.bucket,
            Key=dst,
            CopySource={"Bucket": self.bucket, "Key": src},
        )

    async def move(self, src: str, dst: str) -> None:
        """Copy then delete: a crash between the two leaves both, never neither."""
        await self.copy(src, dst)
        await self.delete(src)

    async def ping(self) -> None:
        """Raise unless the bucket answers (readiness)."""
        await self._run("head_bucket", self.client.head_bucket, Bucket=self.bucket)

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (dev stack and tests)."""
        try:
            await self.ping()
        except StorageUnavailable:
            raise
        except StorageError:
            await self._run("create_bucket", self.client.create_bucket, Bucket=self.bucket)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
