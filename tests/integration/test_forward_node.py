"""The forward handler's promise, checked by Shopify's own library: a Node app built on
@shopify/shopify-api, behind shopipe, verifies every forwarded webhook with
``shopify.webhooks.validate()`` as if Shopify had sent it, and gets the exact body bytes.

The whole pipeline runs: signed webhooks are POSTed to a receiver, stored in the bucket,
announced on the stream, and a worker with the forward route delivers them to the Node app.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.forward_kit import forward_env, node_app, post_samples, read_records, receiver, workers
from tests.forward_kit import write_routes as routes_file
from tests.worker_kit import Kit, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]


@pytest.mark.asyncio
async def test_the_node_app_validates_every_forwarded_sample_and_gets_its_exact_bytes(
    kit: Kit, tmp_path: Path
) -> None:
    record = tmp_path / "node.jsonl"
    with node_app(record) as url:
        path = routes_file(tmp_path / "routes.yaml", {"app": {"topics": ["*"], "url": url}})
        async with receiver(kit) as rx, workers(kit, forward_env(path)):
            # webhook id -> (topic, sha256 of the body)
            sent = {
                wid: (topic, hashlib.sha256(body).hexdigest())
                for wid, (topic, body) in (await post_samples(rx.url)).items()
            }

            async def all_seen() -> bool:
                return len(read_records(record)) >= len(sent)

            await wait_for(all_seen, timeout=60, what="every sample at the Node app")
            await wait_for(lambda: settled(kit), timeout=30, what="every segment finished")
    got = read_records(record)
    assert [g for g in got if not g["valid"]] == []
    assert {g["webhookId"]: (g["topic"], g["sha256"]) for g in got} == {
        wid: (topic.upper().replace("/", "_"), digest) for wid, (topic, digest) in sent.items()
    }
    assert all(g["recordId"] and g["attempt"] == "1" and g["receivedAt"] for g in got)
    assert len(got) == len(sent)  # each delivered once: nothing failed, nothing retried
