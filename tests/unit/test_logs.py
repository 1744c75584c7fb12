"""Structured logs: one JSON object per line, payloads and credentials cut whatever is passed."""

from __future__ import annotations

import json
import logging

import pytest
from shopipe.config import Secret
from shopipe.logs import JsonFormatter

pytestmark = pytest.mark.unit


def _line(msg: str, **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"msg": msg, "levelname": "INFO", "name": "t", **extra})
    out: dict[str, object] = json.loads(JsonFormatter("receiver").format(record))
    return out


def test_line_is_json_with_service_and_extra_fields() -> None:
    line = _line("stored", key="incoming/1-a.seg", records=3)
    assert line["msg"] == "stored"
    assert line["service"] == "receiver"
    assert line["key"] == "incoming/1-a.seg"
    assert line["records"] == 3


@pytest.mark.parametrize(
    "field", ["body", "payload", "redis_password", "shopify_secret", "signature", "hmac_header"]
)
def test_sensitive_fields_are_cut(field: str) -> None:
    line = _line("x", **{field: "s3cr3t-value"})
    assert line[field] == "[cut]"
    assert "s3cr3t-value" not in json.dumps(line)


def test_bytes_are_never_written_only_their_length() -> None:
    line = _line("x", data=b'{"email": "a@b.c"}')
    assert line["data"] == "<18 bytes>"


def test_secret_objects_render_hidden() -> None:
    line = _line("x", credential=Secret("hunter2"))
    assert "hunter2" not in json.dumps(line)


def test_exception_gives_type_and_message_not_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord(
            {"msg": "failed", "levelname": "ERROR", "name": "t", "exc_info": sys.exc_info()}
        )
    line = json.loads(JsonFormatter("worker").format(record))
    assert line["error"] == "ValueError: boom"
    assert "Traceback" not in json.dumps(line)
