"""When the workers tell the operator that the whole backlog waits on saturated routes: every
handler's topics are forwarded too (the records of the others would gain from more workers),
and a wait for a slot says a queue, not chance."""

from __future__ import annotations

import pytest
from shopipe_worker.events import Event
from shopipe_worker.forward.routes import Route
from shopipe_worker.forward.saturation import all_forwarded, covers, queue_seconds
from shopipe_worker.registry import Context, Registry

pytestmark = pytest.mark.unit


async def nothing(_event: Event, _ctx: Context) -> None:
    return None


def route(*topics: str, rate: float = 0.0) -> Route:
    return Route("app", topics, "http://127.0.0.1:1/hook", rate_per_second=rate)


@pytest.mark.parametrize(
    ("outer", "inner", "covered"),
    [
        ("*", "*", True),
        ("*", "orders/create", True),
        ("orders/*", "orders/create", True),
        ("orders/*", "orders/*", True),
        ("orders/create", "orders/create", True),
        ("orders/create", "orders/*", False),
        ("orders/*", "*", False),
        ("orders/*", "products/update", False),
        ("orders/*", "orders/fulfillment/create", False),
    ],
)
def test_a_route_pattern_covers_the_topics_of_another(
    outer: str, inner: str, covered: bool
) -> None:
    assert covers(outer, inner) is covered


def test_the_backlog_is_bound_only_when_every_handlers_topics_are_forwarded() -> None:
    reg = Registry()
    reg.add("orders/*", nothing, name="forward:app")
    assert all_forwarded(reg, (route("orders/*"),))
    reg.add("orders/create", nothing, name="state")
    assert all_forwarded(reg, (route("orders/*"),))
    reg.add("products/update", nothing, name="state")
    # products/update records gain from more workers: the lag may hold them.
    assert not all_forwarded(reg, (route("orders/*"),))
    assert all_forwarded(reg, (route("orders/*"), route("products/*")))
    assert all_forwarded(reg, (route("*"),))


def test_a_queue_is_a_wait_of_a_second_or_three_intervals() -> None:
    assert queue_seconds(route("*")) == 1.0
    assert queue_seconds(route("*", rate=20)) == 1.0
    assert queue_seconds(route("*", rate=0.5)) == 6.0
