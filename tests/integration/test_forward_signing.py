"""Standard Webhooks re-signing per route, checked by the spec's reference library
(``standardwebhooks``, the Python one the spec's authors publish): every secret of a route
verifies (rotation), another does not, and the message id is Shopify's webhook id."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.forward_kit import destination, forward_env, workers, write_routes
from tests.worker_kit import Kit, headers, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

TOPIC = "orders/create"


def secret(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * 4).decode()


NEW, OLD, OTHER = secret(b"new-key!"), secret(b"old-key!"), secret(b"another")


@pytest.mark.asyncio
async def test_signed_deliveries_verify_with_each_secret_of_the_route(
    kit: Kit, tmp_path: Path
) -> None:
    body = json.dumps({"id": 1, "title": "caf\u00e9 \u2615"}, ensure_ascii=False).encode()
    async with destination() as (url, seen):
        route = {"topics": [TOPIC], "url": url, "signing": {"secrets": [NEW, OLD]}}
        env = forward_env(write_routes(tmp_path / "routes.json", {"app": route}))
        async with workers(kit, env):
            await kit.produce([(headers(TOPIC, "wh-77"), body)])
            await wait_for(lambda: settled(kit), what="delivered")
    (req,) = seen.requests
    assert req["body"] == body
    h = req["headers"]
    assert h["webhook-id"] == "wh-77"
    for key in (NEW, OLD):
        assert Webhook(key).verify(req["body"], h) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(req["body"], h)
    # The Shopify headers are still there: the app may verify either way.
    assert h["x-shopify-hmac-sha256"]
