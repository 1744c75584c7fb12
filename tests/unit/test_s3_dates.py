"""S3 dates: the client's timestamp parser reads S3's ISO 8601 dates itself (fast) and gives
every other form to botocore's parser, with the same instant either way."""

from __future__ import annotations

import pytest
from botocore.utils import parse_timestamp
from shopipe.buffer import _timestamp

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01T13:45:00.000Z",  # ListObjectsV2's LastModified
        "2026-12-01T13:45:00Z",
        "2026-12-01T14:45:00.250+01:00",
        "Tue, 01 Dec 2026 13:45:00 GMT",  # a Last-Modified header (HEAD, GET)
        "1764596700",  # epoch seconds
        "2026-12-01T13:45:00",  # no zone: botocore's rule, not a local-time guess of ours
    ],
)
def test_same_instant_as_botocore(value: str) -> None:
    ours, theirs = _timestamp(value), parse_timestamp(value)
    assert ours.timestamp() == theirs.timestamp()
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)
