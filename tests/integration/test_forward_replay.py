"""`shopipe dlq list|replay --route`: the dead letters one forward route made, replayed to it,
without sending them again to the routes that had them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from shopipe_worker import dlq
from starlette.requests import Request
from starlette.responses import Response

from tests.cli_kit import shopipe
from tests.forward_kit import destination, forward_env, ok, workers, write_routes
from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

TOPIC = "orders/create"


@pytest.mark.asyncio
async def test_replay_by_route_sends_again_only_to_that_route(kit: Kit, tmp_path: Path) -> None:
    refusing = True

    async def app_answer(_req: Request, _body: bytes) -> Response:
        return Response("bad", 400) if refusing else Response("ok")

    async with destination(app_answer) as (app_url, app), destination(ok) as (crm_url, crm):
        routes = {
            "app": {"topics": [TOPIC], "url": app_url},
            "crm": {"topics": ["orders/*"], "url": crm_url},
        }
        env = {**kit.env, **forward_env(write_routes(tmp_path / "routes.json", routes))}
        async with workers(kit, forward_env(env["SHOPIPE_FORWARD_ROUTES_FILE"])):
            await kit.produce(
                [(headers(TOPIC, f"wh-{i}"), json.dumps({"i": i}).encode()) for i in range(3)]
            )
            await wait_for(lambda: settled(kit), what="refused by app")
            listed = await asyncio.to_thread(shopipe, "dlq", "list", "--route", "app", env=env)
            assert listed.returncode == 0, listed.stderr
            assert len(listed.stdout.splitlines()) == 3
            none = await asyncio.to_thread(shopipe, "dlq", "list", "--route", "crm", env=env)
            assert none.stdout == ""
            refusing = False
            got = await asyncio.to_thread(shopipe, "dlq", "replay", "--route", "app", env=env)
            assert got.returncode == 0, got.stderr

            async def replayed() -> bool:
                return len(app.requests) == 6 and await settled(kit)

            await wait_for(replayed, what="the replay delivered to app")
    assert await dlq.list_dead(kit.store) == []
    ids = sorted(r["headers"]["x-shopify-webhook-id"] for r in crm.requests)
    assert ids == ["wh-0", "wh-1", "wh-2"]  # crm had them: not sent again
    attempts = sorted(r["headers"]["x-shopipe-attempt"] for r in app.requests)
    assert attempts == ["1", "1", "1", "2", "2", "2"]  # the replay is the webhook's 2nd try
