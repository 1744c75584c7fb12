"""A destination down under load: the route's breaker opens, only probes reach the destination
while it is down, no record uses up its attempts, and everything is delivered once it is back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from shopipe.metrics import REGISTRY
from shopipe_operator.backlog import BacklogProbe
from shopipe_worker import dlq
from starlette.requests import Request
from starlette.responses import Response

from tests.forward_kit import destination, forward_env, workers, write_routes
from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

TOPIC = "orders/create"
PROBE_SECONDS = 0.5
MAX_IN_FLIGHT = 4
RECORDS = 40


@pytest.mark.asyncio
async def test_an_outage_opens_the_breaker_costs_no_attempts_and_loses_nothing(
    kit: Kit, tmp_path: Path
) -> None:
    down = True
    answered: list[tuple[float, int]] = []  # (when, status)

    async def answer(_req: Request, _body: bytes) -> Response:
        status = 503 if down else 200
        answered.append((time.monotonic(), status))
        return Response("x", status)

    route: dict[str, object] = {
        "topics": [TOPIC],
        "url": "",
        "max_in_flight": MAX_IN_FLIGHT,
        "breaker_failures": 3,
        "breaker_probe_seconds": PROBE_SECONDS,
    }
    async with destination(answer) as (url, seen):
        route["url"] = url
        env = forward_env(write_routes(tmp_path / "routes.json", {"app": route}))
        # Three attempts only: without the breaker the outage would dead-letter every record.
        async with workers(kit, {**env, "SHOPIPE_MAX_ATTEMPTS": "3"}, n=2) as regs:
            for s in range(RECORDS // 2):
                await kit.produce(
                    [(headers(TOPIC, f"wh-{s}-{i}"), json.dumps({"s": s}).encode()) for i in (0, 1)]
                )

            async def breaker_open() -> bool:
                doc = await regs[0].status(kit.master)
                return bool(doc["forward"]["app"]["breaker"] == "open")

            await wait_for(breaker_open, what="the breaker open")
            opened = time.monotonic()
            assert REGISTRY.get_sample_value("shopipe_forward_breaker_open", {"route": "app"})

            async def probed() -> bool:
                return sum(t > opened for t, _ in answered) >= 4

            await wait_for(probed, what="four probes while down")
            # The operator leaves the segments waiting on the open circuit out of its backlog.
            probe = BacklogProbe(
                kit.settings.stream,
                kit.settings.consumer_group,
                None,
                0.0,
                cap=1000,
                waiting_key=kit.keys.forward_waiting(),
            )
            seen_backlog = await probe.measure(await kit.master.get())
            down_for = time.monotonic() - opened
            during = sum(t > opened for t, _ in answered)
            down = False
            await wait_for(lambda: settled(kit), timeout=60, what="every record delivered")
            doc = await regs[0].status(kit.master)
    # While open, the destination saw the probes and little else (deliveries in flight as it
    # opened may land just after): not the retries of 40 records.
    assert during <= down_for / PROBE_SECONDS + 1 + MAX_IN_FLIGHT
    delivered = {
        r["headers"]["x-shopify-webhook-id"]
        for r, (_, st) in zip(seen.requests, answered, strict=True)
        if st == 200
    }
    assert len(delivered) == RECORDS
    assert await dlq.list_dead(kit.store) == []
    assert doc["forward"]["app"]["breaker"] == "closed"
    assert seen_backlog.pending is not None
    assert seen_backlog.waiting > 0
    assert seen_backlog.total == (seen_backlog.lag or 0) + max(
        0, seen_backlog.pending - seen_backlog.waiting
    )
    r = await kit.master.get()
    assert await r.zcard(kit.keys.forward_waiting()) == 0  # delivered: none waits any more
