"""The receiver's bounds are validated at start: the answer deadline stays below Shopify's 5 s,
the body-memory budget holds at least one body of the largest accepted size, the ops port is
not the webhook port."""

from __future__ import annotations

import pytest
from shopipe.config import SHOPIFY_TIMEOUT_SECONDS, ReceiverSettings, load_settings
from shopipe.errors import ConfigError

pytestmark = pytest.mark.unit

BASE = {
    "SHOPIPE_S3_BUCKET": "bucket",
    "SHOPIPE_S3_ACCESS_KEY": "k",
    "SHOPIPE_S3_SECRET_KEY": "s",
    "SHOPIPE_SHOPIFY_SECRETS": "x",
}


def test_defaults_answer_before_shopify_gives_up() -> None:
    s = load_settings(ReceiverSettings, BASE)
    assert s.answer_deadline_seconds == 4.0
    assert s.answer_deadline_seconds < SHOPIFY_TIMEOUT_SECONDS
    assert s.max_body_bytes_in_memory >= s.max_body_bytes


@pytest.mark.parametrize("value", ["5", "4.6", "30"])
def test_a_deadline_at_or_past_shopifys_timeout_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="SHOPIPE_ANSWER_DEADLINE_SECONDS: must be at most"):
        load_settings(ReceiverSettings, {**BASE, "SHOPIPE_ANSWER_DEADLINE_SECONDS": value})


def test_a_memory_budget_below_one_body_is_refused() -> None:
    env = {**BASE, "SHOPIPE_MAX_BODY_BYTES": "100000", "SHOPIPE_MAX_BODY_BYTES_IN_MEMORY": "99999"}
    with pytest.raises(ConfigError, match="SHOPIPE_MAX_BODY_BYTES_IN_MEMORY"):
        load_settings(ReceiverSettings, env)


def test_the_ops_port_is_optional_and_must_differ_from_the_webhook_port() -> None:
    assert load_settings(ReceiverSettings, BASE).ops_port is None
    assert load_settings(ReceiverSettings, {**BASE, "SHOPIPE_OPS_PORT": "9090"}).ops_port == 9090
    with pytest.raises(ConfigError, match="SHOPIPE_OPS_PORT must differ"):
        load_settings(ReceiverSettings, {**BASE, "SHOPIPE_OPS_PORT": "8080"})
