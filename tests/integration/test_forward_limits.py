"""A route's limits hold across workers: two workers (each with its own HTTP client and
process-local state; only Redis in common) deliver to one destination that records the most
requests it had in flight at once and the most it saw start within any second."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from shopipe_worker.forward import limits, state
from shopipe_worker.forward.routes import parse
from starlette.requests import Request
from starlette.responses import Response

from tests.forward_kit import destination, forward_env, workers, write_routes
from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

TOPIC = "orders/create"
SEGMENTS, PER_SEGMENT = 30, 2


def most_in_one_second(starts: list[float]) -> int:
    starts = sorted(starts)
    most, lo = 0, 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= 1.0:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("max_in_flight", "rate", "answer_seconds"),
    [(3, 0, 0.3), (50, 20, 0.0)],
    ids=["in-flight", "rate"],
)
async def test_two_workers_keep_to_the_routes_limits(
    kit: Kit, tmp_path: Path, max_in_flight: int, rate: int, answer_seconds: float
) -> None:
    async def answer(_req: Request, _body: bytes) -> Response:
        await asyncio.sleep(answer_seconds)
        return Response("ok")

    async with destination(answer) as (url, seen):
        route = {"topics": [TOPIC], "url": url, "max_in_flight": max_in_flight}
        route["rate_per_second"] = rate
        env = forward_env(write_routes(tmp_path / "routes.json", {"app": route}))
        async with workers(kit, env, n=2):
            for s in range(SEGMENTS):
                batch = [
                    (headers(TOPIC, f"wh-{s}-{i}"), json.dumps({"id": s, "i": i}).encode())
                    for i in range(PER_SEGMENT)
                ]
                await kit.produce(batch)
            await wait_for(lambda: settled(kit), timeout=120, what="every record delivered")
    ids = [json.loads(r["body"]) for r in seen.requests]
    assert len(ids) == SEGMENTS * PER_SEGMENT  # each once: limits defer, never drop or repeat
    if rate:
        assert most_in_one_second(seen.starts) <= rate * 1.1
    else:
        # Not above the limit, and the limit was reached: the load could have gone higher.
        assert seen.max_in_flight == max_in_flight


@pytest.mark.asyncio
async def test_a_webhook_being_sent_is_not_sent_again_by_another_caller(kit: Kit) -> None:
    """A worker that took over the record of one paused past the claim threshold finds the
    webhook being sent: it waits for that delivery's outcome (sent: nothing to do) rather than
    sending it a second time; after a failed try the next may start."""
    (route,) = parse({"routes": {"app": {"topics": ["*"], "url": "http://127.0.0.1:9/"}}})
    r = await kit.master.get()
    keys = state.Keys(kit.settings.key_prefix)
    waiting = (kit.settings.key_prefix + ":fwd:waiting", "seg")
    first = await limits.start(r, keys, route, "wh-1", 60)
    assert isinstance(first, limits.Lease)
    with pytest.raises(limits.Throttled):  # no second try while the first is under way
        await limits.start(r, keys, route, "wh-1", 60, wait=0.3)
    second = asyncio.create_task(limits.start(r, keys, route, "wh-1", 60, wait=5.0))
    await first.end(True, 60, waiting)
    assert await second is limits.Verdict.SENT
    # A try that failed frees the webhook for the next at once.
    failed = await limits.start(r, keys, route, "wh-2", 60)
    assert isinstance(failed, limits.Lease)
    await failed.end(False, 60, waiting)
    retry = await limits.start(r, keys, route, "wh-2", 60, wait=0.0)
    assert isinstance(retry, limits.Lease)
    assert retry.attempt == 2
