"""The segment format: round trips, framing of hostile bodies, malformed input refused."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shopipe import segment
from shopipe.errors import PermanentError
from shopipe.segment import Record, SegmentError, decode, encode

pytestmark = pytest.mark.unit

NAME = "1764100590123-0123456789abcdef.seg"

records_st = st.lists(
    st.builds(
        Record,
        id=st.text(min_size=1, max_size=40),
        received_at=st.floats(min_value=0, max_value=4e9),
        headers=st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=6),
        body=st.binary(max_size=3000),
    ),
    min_size=1,
    max_size=8,
)


@given(records_st)
def test_encode_decode_round_trips_exact_bytes(records: list[Record]) -> None:
    assert decode(encode(records)) == records


def test_layout_is_the_documented_one() -> None:
    rec = Record(f"{NAME}:0", 1764100590.123, {"X-Shopify-Topic": "orders/create"}, b"ab\ncd")
    data = encode([rec])
    lines = data.split(b"\n")
    assert lines[0] == b"SHOPIPE-SEGMENT/1"
    assert json.loads(lines[1]) == {
        "id": f"{NAME}:0",
        "received_at": 1764100590.123,
        "headers": {"X-Shopify-Topic": "orders/create"},
        "length": 5,
    }
    assert data.endswith(b"\nab\ncd\n")


def test_body_that_looks_like_a_record_stays_one_body() -> None:
    fake = encode([Record("forged:0", 1.0, {}, b"x")])
    recs = [Record(f"{NAME}:0", 1.0, {}, fake + b"\n{"), Record(f"{NAME}:1", 2.0, {}, b"")]
    assert decode(encode(recs)) == recs


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"SHOPIPE-SEGMENT/2\n",
        b"SHOPIPE-SEGMENT/1\n",
        b"SHOPIPE-SEGMENT/1\n{not json}\n",
        b'SHOPIPE-SEGMENT/1\n{"id": "a", "received_at": 1, "headers": {}, "length": 5}\nab\n',
        b'SHOPIPE-SEGMENT/1\n{"id": "a", "received_at": 1, "headers": {}, "length": 2}\nabc\n',
        b'SHOPIPE-SEGMENT/1\n{"id": "a", "received_at": 1, "headers": {}, "length": -1}\n\n',
        b'SHOPIPE-SEGMENT/1\n{"id": "", "received_at": 1, "headers": {}, "length": 0}\n\n',
        b'SHOPIPE-SEGMENT/1\n{"id": "a", "received_at": "x", "headers": {}, "length": 0}\n\n',
        b'SHOPIPE-SEGMENT/1\n{"id": "a", "received_at": 1, "headers": {"a": 1}, "length": 0}\n\n',
        b"SHOPIPE-SEGMENT/1\n[1]\n",
        b'SHOPIPE-SEGMENT/1\n{"id": "a", "received_at": 1, "headers": {}, "length": 0}',
    ],
)
def test_malformed_segment_raises_segment_error(data: bytes) -> None:
    with pytest.raises(SegmentError):
        decode(data)


@given(st.binary(max_size=400))
def test_decode_never_raises_anything_but_segment_error(data: bytes) -> None:
    with contextlib.suppress(SegmentError):
        decode(segment.MAGIC + data)


def test_truncated_segment_never_yields_a_damaged_record() -> None:
    # The format has no trailer: a cut exactly between records reads as fewer records (S3 PUTs
    # are atomic with Content-MD5, so that cannot happen in the bucket); any other cut raises.
    recs = [Record(f"{NAME}:{i}", 1.0, {}, b"body%d" % i) for i in range(3)]
    data = encode(recs)
    boundaries = {len(encode(recs[:n])) for n in (1, 2)}
    for cut in range(len(data)):
        if cut in boundaries:
            assert decode(data[:cut]) == recs[: len(decode(data[:cut]))]
            continue
        with pytest.raises(SegmentError):
            decode(data[:cut])


def test_segment_error_is_permanent() -> None:
    assert issubclass(SegmentError, PermanentError)


def test_encode_refuses_empty_and_non_str_headers() -> None:
    with pytest.raises(SegmentError):
        encode([])
    with pytest.raises(SegmentError):
        encode([Record("a", 1.0, {"a": 1}, b"")])  # type: ignore[dict-item]


def test_keys_sort_by_time_and_names_validate() -> None:
    a, b = segment.new_key(1764100590.123), segment.new_key(1764100591.0)
    assert a.startswith("incoming/1764100590123-")
    assert a.endswith(".seg")
    assert a < b
    assert segment.is_segment_key(a)
    assert segment.time_of(a) == pytest.approx(1764100590.123)
    name = segment.name_of(a)
    assert segment.incoming_key(name) == a
    assert segment.processed_key(name) == "processed/" + name
    assert segment.dead_segment_key(name) == "dead-letter/segments/" + name
    assert segment.new_key() != segment.new_key()


@pytest.mark.parametrize(
    "key",
    ["incoming/../x.seg", "incoming/a/1764100590123-0123456789abcdef.seg", "other/" + NAME, NAME],
)
def test_is_segment_key_refuses_anything_else(key: str) -> None:
    assert not segment.is_segment_key(key)


def test_record_ids() -> None:
    rid = segment.record_id(NAME, 3)
    assert rid == f"{NAME}:3"
    assert segment.parse_record_id(rid) == (NAME, 3)
    assert segment.dead_letter_key(rid) == f"dead-letter/{NAME}:3.json"
    for bad in ("x:1", f"{NAME}:-1", f"{NAME}:01", f"../{NAME}:1", f"{NAME}:1/x"):
        with pytest.raises(SegmentError):
            segment.parse_record_id(bad)
    with pytest.raises(SegmentError):
        segment.record_id("../etc", 0)
