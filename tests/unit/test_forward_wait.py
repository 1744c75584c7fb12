"""A segment whose records on one route found no slot: the first waited, the others do not."""

from __future__ import annotations

import time

import pytest
from shopipe_worker.forward import Forwarder, limits

pytestmark = pytest.mark.unit


def test_after_one_record_was_throttled_the_rest_of_its_segment_on_that_route_waits_not() -> None:
    f = Forwarder((), None)
    assert f._wait("seg-a", "app") == limits.WAIT_SECONDS
    f._throttled[("seg-a", "app")] = time.monotonic() + limits.WAIT_SECONDS  # as deliver notes
    assert f._wait("seg-a", "app") == 0.0
    # Other segments and other routes of the same segment still wait their turn.
    assert f._wait("seg-b", "app") == limits.WAIT_SECONDS
    assert f._wait("seg-a", "crm") == limits.WAIT_SECONDS


def test_the_note_expires_so_a_later_pass_waits_again() -> None:
    f = Forwarder((), None)
    f._throttled[("seg-a", "app")] = time.monotonic() - 0.001
    assert f._wait("seg-a", "app") == limits.WAIT_SECONDS
    assert f._throttled == {}  # expired notes are dropped: the table stays small
