"""The one bytes-or-str reader of Redis replies."""

from __future__ import annotations

import pytest
from shopipe.stream import as_str

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (b"1700000000000-0", "1700000000000-0"),
        ("master", "master"),
        (b"caf\xc3\xa9", "café"),
        (7, "7"),
    ],
)
def test_a_reply_reads_the_same_from_a_decoding_client_or_not(reply: object, text: str) -> None:
    assert as_str(reply) == text
