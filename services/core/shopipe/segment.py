"""The segment format: one object in the bucket holding one or more webhook records.

Bytes (docs/architecture.md)::

    SHOPIPE-SEGMENT/1\\n
    {"id": "...", "received_at": 1764100590.123, "headers": {...}, "length": L}\\n
    <L raw body bytes>\\n
    ... repeated ...

The JSON line never holds a raw newline (json escapes it) and the body is framed by its length,
so any body bytes, newlines included, round-trip exactly. Keys are
``incoming/<ms:013d>-<hex16>.seg``: they sort by receive time, and neither topic nor shop ever
appears in one, so a forged header cannot escape or shadow a prefix. Record ids are
``<segment name>:<index>``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shopipe.errors import PermanentError

MAGIC = b"SHOPIPE-SEGMENT/1\n"
INCOMING = "incoming/"
PROCESSED = "processed/"
DEAD_LETTER = "dead-letter/"
DEAD_SEGMENTS = "dead-letter/segments/"
SUFFIX = ".seg"

_NAME = re.compile(r"^(?P<ms>[0-9]{13})-(?P<hex>[0-9a-f]{16})\.seg$")
_RECORD_ID = re.compile(r"^(?P<name>[0-9]{13}-[0-9a-f]{16}\.seg):(?P<index>0|[1-9][0-9]{0,8})$")


class SegmentError(PermanentError):
    """The bytes are not a well-formed segment (or a name is not a segment name)."""


@dataclass(frozen=True)
class Record:
    """One webhook as received: exact body bytes and every Shopify header."""

    id: str
    received_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


# --- names and keys -----------------------------------------------------------------------------


def new_name(now: float | None = None) -> str:
    """A fresh segment name ``<ms:013d>-<hex16>.seg`` (random part: no two receivers collide)."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:013d}-{secrets.token_hex(8)}{SUFFIX}"


def incoming_key(name: str) -> str:
    check_name(name)
    return INCOMING + name


def new_key(now: float | None = None) -> str:
    """A fresh ``incoming/`` key for a segment about to be written."""
    return INCOMING + new_name(now)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SegmentError("not a segment name")
    return name


def name_of(key: str) -> str:
    """The segment name of a key under any prefix (``incoming/x.seg`` -> ``x.seg``)."""
    return check_name(key.rsplit("/", 1)[-1])


def is_segment_key(key: str, prefix: str = INCOMING) -> bool:
    """True for exactly ``<prefix><name>``: nothing nested, nothing else."""
    return key.startswith(prefix) and _NAME.match(key[len(prefix) :]) is not None


def time_of(name_or_key: str) -> float:
    """Receive time (epoch seconds) encoded in a segment name or key."""
    m = _NAME.match(name_or_key.rsplit("/", 1)[-1])
    if m is None:
        raise SegmentError("not a segment name")
    return int(m.group("ms")) / 1000.0


def processed_key(name: str) -> str:
    return PROCESSED + check_name(name)


def dead_segment_key(name: str) -> str:
    return DEAD_SEGMENTS + check_name(name)


def record_id(name: str, index: int) -> str:
    if index < 0:
        raise SegmentError("record index must be >= 0")
    return f"{check_name(name)}:{index}"


def parse_record_id(rid: str) -> tuple[str, int]:
    """``(segment name, index)`` of a record id; SegmentError if it is not one."""
    m = _RECORD_ID.match(rid)
    if m is None:
        raise SegmentError("not a record id")
    return m.group("name"), int(m.group("index"))


def dead_letter_key(rid: str) -> str:
    """``dead-letter/<record id>.json``; the id is validated so the key cannot escape."""
    parse_record_id(rid)
    return f"{DEAD_LETTER}{rid}.json"


# --- bytes --------------------------------------------------------------------------------------


def encode(records: Sequence[Record]) -> bytes:
    """Serialise records; raises SegmentError for an empty list or a bad field."""
    if not records:
        raise SegmentError("a segment holds at least one record")
    parts = [MAGIC]
    for rec in records:
        if not isinstance(rec.body, bytes | bytearray):
            raise SegmentError("record body must be bytes")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in rec.headers.items()):
            raise SegmentError("record headers must map str to str")
        meta = {
            "id": rec.id,
            "received_at": rec.received_at,
            "headers": dict(rec.headers),
            "length": len(rec.body),
        }
        parts.append(json.dumps(meta, allow_nan=False).encode("ascii") + b"\n")
        parts.append(bytes(rec.body))
        parts.append(b"\n")
    return b"".join(parts)


def _meta(line: bytes, index: int) -> dict[str, Any]:
    try:
        meta = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        raise SegmentError(f"record {index}: header line is not JSON") from e
    if not isinstance(meta, dict):
        raise SegmentError(f"record {index}: header line is not an object")
    rid, at, headers, length = (meta.get(k) for k in ("id", "received_at", "headers", "length"))
    if not isinstance(rid, str) or not rid:
        raise SegmentError(f"record {index}: bad id")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise SegmentError(f"record {index}: bad received_at")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise SegmentError(f"record {index}: bad headers")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise SegmentError(f"record {index}: bad length")
    return meta


def decode(data: bytes) -> list[Record]:
    """Parse a segment; raises SegmentError on anything malformed (never a partial list)."""
    if not data.startswith(MAGIC):
        raise SegmentError("missing segment magic")
    pos = len(MAGIC)
    out: list[Record] = []
    # Each record consumes at least a few bytes, so this loop ends within len(data) turns.
    while pos < len(data):
        index = len(out)
        end = data.find(b"\n", pos)
        if end < 0:
            raise SegmentError(f"record {index}: truncated header line")
        meta = _meta(data[pos:end], index)
        start = end + 1
        stop = start + meta["length"]
        if stop >= len(data) or data[stop : stop + 1] != b"\n":
            raise SegmentError(f"record {index}: truncated body")
        out.append(
            Record(
                id=meta["id"],
                received_at=float(meta["received_at"]),
                headers=dict(meta["headers"]),
                body=data[start:stop],
            )
        )
        pos = stop + 1
    if not out:
        raise SegmentError("segment holds no record")
    return out
