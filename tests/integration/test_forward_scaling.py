"""The operator adds no worker for a backlog that waits on a route at its rate (issue 17), and
still does for one a slow handler holds back.

2,000 webhooks (200 segments) wait in the stream; two workers run. Forwarded to a route limited
to 5 deliveries a second, the backlog is bound to the route once the workers have seen it
saturated, and the operator's own measure (``BacklogProbe`` on the real Redis and bucket) with
its own decision (``Scaler``) asks for no more than the two workers there are; the same
measure without the workers' mark would ask for more. Handled by a slow handler instead, the
same backlog asks for more workers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from shopipe_operator.backlog import Backlog, BacklogProbe
from shopipe_operator.scaling import ScalePolicy, Scaler
from starlette.requests import Request
from starlette.responses import Response

from tests.forward_kit import destination, forward_env, workers, write_routes
from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

SEGMENTS, PER_SEGMENT = 200, 10  # 2,000 webhooks
# Two workers of 4 segments each wait in line for 5 deliveries a second: each delivery waits
# about 8 / 5 s for its slot, past the second that says the route is saturated. (At 20/s with
# the default 16 segments each the same holds, but hundreds of deliveries poll for slots and
# stopping the workers with them in hand took minutes on a loaded CI machine.)
RATE = 5
CURRENT = 2  # workers running
POLICY = ScalePolicy(
    min_replicas=1, max_replicas=10, target_per_worker=100, up_step=4, down_window=300.0
)


async def fill(kit: Kit, topic: str, body: dict[str, object]) -> None:
    for s in range(SEGMENTS):
        batch = [
            (
                headers(topic, f"wh-{s}-{i}"),
                json.dumps({**body, "id": s * PER_SEGMENT + i + 1}).encode(),
            )
            for i in range(PER_SEGMENT)
        ]
        await kit.produce(batch)


async def measure(kit: Kit) -> Backlog:
    """The operator's measure, as its app builds the probe (sampled every time here)."""
    probe = BacklogProbe(
        kit.settings.stream,
        kit.settings.consumer_group,
        kit.store,
        0.0,
        cap=10_000,
        waiting_key=kit.keys.forward_waiting(),
        bound_key=kit.keys.forward_bound(),
    )
    return await probe.measure(await kit.master.get())


@pytest.mark.asyncio
async def test_a_backlog_waiting_on_a_throttled_route_asks_for_no_more_workers(
    kit: Kit, tmp_path: Path
) -> None:
    await fill(kit, "orders/create", {"total_price": "1.00"})
    busy = False

    async def answer(_req: Request, _body: bytes) -> Response:
        # Once measured, the app asks for a pause (Retry-After): the workers defer what they
        # hold instead of waiting for slots, and stop at once.
        return Response("busy", 429, {"Retry-After": "300"}) if busy else Response("ok")

    async with destination(answer) as (url, seen):
        # The chart's built-ins beside a route of every topic: the state handler's records
        # wait on the route too.
        route = {"topics": ["*"], "url": url, "max_in_flight": 50, "rate_per_second": RATE}
        env = forward_env(
            write_routes(tmp_path / "routes.json", {"app": route}),
            SHOPIPE_BUILTIN_HANDLERS="state,compliance,forward",
            SHOPIPE_CONCURRENCY="4",
        )
        async with workers(kit, env, n=CURRENT):
            seen_bound: list[Backlog] = []

            async def bound() -> bool:
                b = await measure(kit)
                seen_bound[:] = [b]
                return b.bound

            await wait_for(bound, timeout=60, what="the backlog bound to the saturated route")
            b = seen_bound[0]
            delivered = len(seen.requests)
            busy = True
    assert (b.lag or 0) > SEGMENTS // 2  # most of it still unread
    assert delivered < SEGMENTS * PER_SEGMENT // 2
    decision = Scaler(POLICY).decide(b.total, CURRENT, 0.0)
    assert (decision.desired or 0) <= CURRENT, decision
    assert (decision.replicas or 0) <= CURRENT, decision
    # Without the workers' mark the same measure would have asked for more.
    unmarked = dataclasses.replace(b, bound=False)
    assert Scaler(POLICY).decide(unmarked.total, CURRENT, 0.0).reason == "backlog_high"


@pytest.mark.asyncio
async def test_a_backlog_a_slow_handler_holds_back_asks_for_more_workers(kit: Kit) -> None:
    await fill(kit, "test/slow", {"sleep": 0.05})
    async with kit.running("w1"), kit.running("w2"):
        seen: list[Backlog] = []

        async def reading() -> bool:
            seen[:] = [await measure(kit)]
            return bool(seen[0].pending)

        # Measured as the workers start: the backlog is still there. It drains in seconds;
        # the workers stop with nothing in hand.
        await wait_for(reading, timeout=30, what="the workers reading")
        b = seen[0]
        await wait_for(lambda: settled(kit), timeout=120, what="the backlog handled")
    assert not b.bound
    decision = Scaler(POLICY).decide(b.total, CURRENT, 0.0)
    assert decision.reason == "backlog_high", decision
    assert (decision.replicas or 0) > CURRENT
