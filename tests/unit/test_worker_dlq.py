"""A replayed record keeps the done-marker identity of the original (issue 14 §3)."""

from __future__ import annotations

import pytest
from shopipe import segment
from shopipe.stream import Keys
from shopipe_worker.dlq import with_identity
from shopipe_worker.events import Event
from shopipe_worker.ledger import marker_keys

pytestmark = pytest.mark.unit

RID = segment.record_id(segment.new_name(0.0), 3)
BASE = {"X-Shopify-Topic": "orders/create", "X-Shopify-Shop-Domain": "a.myshopify.com"}


@pytest.mark.parametrize("webhook_id", [None, "", "  "])
def test_a_record_without_a_webhook_id_keeps_its_marker_in_every_copy(
    webhook_id: str | None,
) -> None:
    headers = dict(BASE) if webhook_id is None else {**BASE, "x-shopify-webhook-id": webhook_id}
    original = segment.Record(RID, 1.0, headers, b"{}")
    copy = with_identity(original)
    # A replayed copy gets a new record id (from its segment's name): the marker must not.
    replayed = segment.Record(segment.record_id(segment.new_name(9.0), 0), 1.0, copy.headers, b"{}")
    keys = Keys("p")
    assert marker_keys(keys, Event.from_record(replayed)) == marker_keys(
        keys, Event.from_record(original)
    )
    assert [k.lower() for k in copy.headers].count("x-shopify-webhook-id") == 1


def test_a_record_with_a_webhook_id_is_written_as_it_was() -> None:
    original = segment.Record(RID, 1.0, {**BASE, "X-Shopify-Webhook-Id": "w-1"}, b"{}")
    assert with_identity(original) is original
