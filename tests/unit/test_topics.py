"""The topic metric label: Shopify's published topics, everything else ``other``."""

from __future__ import annotations

import pytest
from shopipe import metrics
from shopipe.topics import PUBLISHED

pytestmark = pytest.mark.unit


def test_published_topics_are_their_own_label() -> None:
    for topic in ("orders/create", "shop/redact", "customers/data_request", "app/uninstalled"):
        assert topic in PUBLISHED
        assert metrics.topic_label(topic) == topic


def test_forged_topics_never_become_labels() -> None:
    # Made-up topics first: under the old first-come labels they would have used up the slots.
    forged = {metrics.topic_label(f"made_up/t{i}") for i in range(500)}
    assert forged == {"other"}
    assert metrics.topic_label("") == "other"
    assert metrics.topic_label("orders/create ") == "other"
    assert metrics.topic_label("ORDERS/CREATE") == "other"
    # ...and the genuine topics that come after still get their own label.
    assert {metrics.topic_label(t) for t in PUBLISHED} == set(PUBLISHED)


def test_the_receivers_label_for_unread_topics_stays() -> None:
    assert metrics.topic_label("unknown") == "unknown"


def test_published_topics_look_like_what_the_receiver_accepts() -> None:
    from shopipe import shopify

    assert all(shopify._TOPIC.match(topic) for topic in PUBLISHED)
