"""Error kinds: every shopipe error says whether retrying can help (as kopf does).

Wrap the library's error with ``raise ... from e`` and keep payloads out of messages.
"""

from __future__ import annotations


class ShopipeError(Exception):
    """Base of every error shopipe raises on purpose."""

    retryable: bool = False


class PermanentError(ShopipeError):
    """Retrying the same input cannot succeed (bad data, bad configuration)."""

    retryable = False


class TransientError(ShopipeError):
    """The world may change: retrying later can succeed (network, failover, outage)."""

    retryable = True


class Deferred(TransientError):
    """The work was not attempted (a destination is paused or its circuit open): try it later,
    counting no attempt, so waiting never uses up a record's attempts."""


class ConfigError(PermanentError):
    """A setting is missing or wrong. The message names the variable, never a secret value."""


class StorageUnavailable(TransientError):
    """The object store did not answer or refused for a reason that may pass."""


class StorageError(PermanentError):
    """The object store refused for a reason that will not pass (credentials, bucket)."""


class RedisUnavailable(TransientError):
    """No Redis master could be reached or confirmed."""
