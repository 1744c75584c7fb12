"""Receiver test setup shared by the receiver's integration tests and fault drills."""

from __future__ import annotations

import uuid

from shopipe.config import ReceiverSettings, load_settings
from shopipe_devstack import Stack


def receiver_settings(stack: Stack, secrets: str, **extra: str) -> ReceiverSettings:
    """Settings for an in-process receiver on ``stack``: ``secrets`` (comma-separated), a free
    loopback port, and a stream of its own so tests sharing a stack never see each other's
    entries. ``extra`` SHOPIPE_* values are applied last."""
    env = {
        **stack.info.receiver_env(),
        "SHOPIPE_SHOPIFY_SECRETS": secrets,
        "SHOPIPE_HTTP_HOST": "127.0.0.1",
        "SHOPIPE_HTTP_PORT": "0",
        "SHOPIPE_STREAM": f"test:{uuid.uuid4().hex}",
        **extra,
    }
    return load_settings(ReceiverSettings, env)
