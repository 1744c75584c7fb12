import base64
import json

import pytest
from shopipe import segment
from shopipe.backlog import incoming_summary
from shopipe.buffer import ObjectInfo
from shopipe.config import WorkerSettings, load_settings
from shopipe_worker.consumer import backoff
from shopipe_worker.deadletter import BadDeadLetter, Document
from shopipe_worker.dlq import DeadLetter, is_record_key
from shopipe_worker.events import Event

pytestmark = pytest.mark.unit

ENV = {
    "SHOPIPE_S3_BUCKET": "bucket",
    "SHOPIPE_S3_ACCESS_KEY": "a",
    "SHOPIPE_S3_SECRET_KEY": "b",
    "SHOPIPE_REDIS_URL": "redis://127.0.0.1:1/0",
    "SHOPIPE_RETRY_BASE_SECONDS": "1",
    "SHOPIPE_RETRY_MAX_SECONDS": "10",
}


def test_backoff_doubles_per_attempt_up_to_the_cap():
    settings = load_settings(WorkerSettings, ENV)
    for attempt, expected in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (60, 10)]:
        got = backoff(settings, attempt)
        assert expected * 0.9 <= got <= expected * 1.1


def test_incoming_summary_counts_segments_and_ages_the_oldest():
    old, new = segment.new_key(1000.0), segment.new_key(1100.0)
    objs = [ObjectInfo(k, 1, 0.0) for k in (new, old, "incoming/not-a-segment")]
    count, oldest = incoming_summary(objs, now=1200.0)
    assert count == 2
    assert oldest == pytest.approx(200.0)
    assert incoming_summary([], now=5.0) == (0, 0.0)


def test_dead_letter_round_trips_the_record():
    name = segment.new_name(1.0)
    rid = segment.record_id(name, 2)
    headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "w"}
    ev = Event.from_record(segment.Record(rid, 5.0, headers, b"\x00raw\nbytes"))
    doc = Document.of(ev, segment.incoming_key(name), "RuntimeError: boom", 8, "why")
    stored = json.loads(json.dumps(doc.to_json()))  # as it goes through the bucket
    assert stored["attempts"] == 8
    assert base64.b64decode(stored["body_base64"]) == b"\x00raw\nbytes"
    assert Document.from_json(stored, "k") == doc
    dl = DeadLetter(segment.dead_letter_key(rid), Document.from_json(stored, "k"))
    rec = dl.record()
    assert (rec.id, rec.received_at, rec.body) == (rid, 5.0, b"\x00raw\nbytes")
    assert rec.headers["x-shopify-topic"] == "orders/create"
    assert dl.summary()["error"] == "RuntimeError: boom"
    assert dl.summary()["reason"] == "why"
    assert "body_base64" not in dl.summary()
    with pytest.raises(BadDeadLetter, match=r"dead-letter/x\.json"):
        Document.from_json({"record_id": rid}, "dead-letter/x.json")
    with pytest.raises(BadDeadLetter):
        Document.from_json([], "dead-letter/x.json")


def test_a_dead_letter_written_before_reason_existed_still_reads():
    rid = segment.record_id(segment.new_name(1.0), 0)
    ev = Event.from_record(segment.Record(rid, 5.0, {}, b"{}"))
    old = Document.of(ev, "incoming/x", "Error: x", 1).to_json()
    del old["reason"]
    assert Document.from_json(old, "k").reason == ""


def test_only_record_objects_count_as_dead_letters():
    name = segment.new_name(1.0)
    assert is_record_key(segment.dead_letter_key(segment.record_id(name, 0)))
    assert not is_record_key(segment.dead_segment_key(name))
    assert not is_record_key(segment.dead_segment_key(name) + ".json")
