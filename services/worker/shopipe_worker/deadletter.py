"""The dead-letter document: what the worker writes under ``dead-letter/`` for a record that kept
failing (or can never succeed), and what ``shopipe dlq`` reads back to list and replay it.

One schema for both sides. The JSON field names are the stored format: documents written by an
older worker stay readable (``reason`` came later and defaults to empty).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shopipe.errors import PermanentError
from shopipe.segment import Record

from shopipe_worker.events import Event


class BadDeadLetter(PermanentError):
    """A dead-letter object that is not what the worker writes."""


@dataclass(frozen=True)
class Document:
    """One dead-lettered record with why and when it failed."""

    record_id: str
    segment: str  # the key of the segment it was read from
    topic: str
    shop: str
    webhook_id: str
    event_id: str
    error: str  # the exception's type and message (no payload in it)
    reason: str  # a short machine-readable cause, e.g. header_body_mismatch ("" when none)
    attempts: int
    received_at: float
    dead_lettered_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def of(
        cls,
        event: Event,
        key: str,
        error: str,
        attempts: int,
        reason: str = "",
        now: float | None = None,
    ) -> Document:
        return cls(
            record_id=event.record_id,
            segment=key,
            topic=event.topic,
            shop=event.shop,
            webhook_id=event.webhook_id,
            event_id=event.event_id,
            error=error,
            reason=reason,
            attempts=attempts,
            received_at=event.received_at,
            dead_lettered_at=time.time() if now is None else now,
            headers=dict(event.headers),
            body=event.body,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "segment": self.segment,
            "topic": self.topic,
            "shop": self.shop,
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "error": self.error,
            "reason": self.reason,
            "attempts": self.attempts,
            "received_at": self.received_at,
            "dead_lettered_at": self.dead_lettered_at,
            "headers": dict(self.headers),
            "body_base64": base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> Document:
        """The document parsed from its JSON value; BadDeadLetter naming ``where`` (its key)
        when the record cannot be rebuilt from it."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            return cls(
                record_id=str(doc["record_id"]),
                segment=str(doc.get("segment", "")),
                topic=str(doc.get("topic", "")),
                shop=str(doc.get("shop", "")),
                webhook_id=str(doc.get("webhook_id", "")),
                event_id=str(doc.get("event_id", "")),
                error=str(doc.get("error", "")),
                reason=str(doc.get("reason", "")),
                attempts=int(doc.get("attempts", 0)),
                received_at=float(doc["received_at"]),
                dead_lettered_at=float(doc.get("dead_lettered_at", 0.0)),
                headers={str(k): str(v) for k, v in dict(doc["headers"]).items()},
                body=base64.b64decode(str(doc["body_base64"]), validate=True),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise BadDeadLetter(f"{where}: not a dead-letter record") from e

    def record(self) -> Record:
        """The original record (id still the old one)."""
        return Record(self.record_id, self.received_at, self.headers, self.body)

    def summary(self) -> dict[str, Any]:
        """What ``shopipe dlq list`` shows of it: no body, no headers."""
        return {
            "record_id": self.record_id,
            "topic": self.topic,
            "shop": self.shop,
            "attempts": self.attempts,
            "error": self.error,
            "reason": self.reason,
            "dead_lettered_at": self.dead_lettered_at,
        }
