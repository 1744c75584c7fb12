"""Hundreds of concurrent webhooks: every one acknowledged is in the bucket, and group commit
puts many of them in each segment."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from shopipe import segment
from shopipe.buffer import Buffer
from shopipe.metrics import REGISTRY
from shopipe_devstack import Stack
from shopipe_receiver.sender import signed_headers
from shopipe_receiver.server import running

from tests.receiver_kit import receiver_settings

pytestmark = pytest.mark.integration

SECRET = "concurrency-secret"
N = 400
CONNECTIONS = 100
ONE = httpx.Limits(max_connections=1)
# Unused on http://, but httpx loads the CA bundle for every client not given a context.
TLS = httpx.create_ssl_context()


@pytest.mark.asyncio
async def test_hundreds_of_concurrent_webhooks_are_all_stored_in_shared_segments(
    stack: Stack,
) -> None:
    settings = receiver_settings(stack, SECRET)
    bodies = [json.dumps({"id": i, "pad": "z" * (i % 50)}).encode() for i in range(N)]
    segments_before = REGISTRY.get_sample_value("shopipe_receiver_segments_total") or 0.0
    responses: list[httpx.Response | None] = [None] * N
    todo = list(range(N))
    tries = [0] * N
    async with running(settings) as r:

        async def connection() -> None:
            # A client per connection, as real senders have: one httpx pool shared by 100
            # connections spends more CPU finding a free connection than sending (seconds for
            # this test), and connections left idle past the server's keep-alive timeout race
            # its close against their reuse.
            async with httpx.AsyncClient(timeout=30, verify=TLS, limits=ONE) as c:
                while todo:
                    i = todo.pop()
                    headers = signed_headers("orders/create", bodies[i], SECRET)
                    responses[i] = resp = await c.post(r.url, content=bodies[i], headers=headers)
                    # On a starved machine a webhook may miss the answer deadline: a 503 that
                    # Shopify would retry, and so does this sender (bounded).
                    tries[i] += 1
                    if resp.status_code == 503 and tries[i] < 3:
                        todo.append(i)

        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
        puts = r.receiver.commit.puts if r.receiver.commit else -1
    answered = [resp for resp in responses if resp is not None]
    assert [resp.status_code for resp in answered] == [200] * N
    ids = [resp.json()["id"] for resp in answered]
    assert len(set(ids)) == N
    # Group commit: far fewer PUTs than webhooks under concurrency.
    assert 0 < puts < N
    segments = (
        REGISTRY.get_sample_value("shopipe_receiver_segments_total") or 0.0
    ) - segments_before
    assert segments == puts
    bucket = Buffer(settings)
    try:
        names = {segment.parse_record_id(i)[0] for i in ids}
        found: dict[str, bytes] = {}
        for name in names:
            for rec in segment.decode(await bucket.get(segment.incoming_key(name))):
                found[rec.id] = rec.body
    finally:
        bucket.close()
    # Every segment holds acknowledged webhooks, except one made durable after the deadline of
    # all of its webhooks: it holds only copies whose retry was acknowledged elsewhere.
    late = sum(t > 1 for t in tries)
    assert puts - late <= len(names) <= puts
    assert [found[i] for i in ids] == bodies
