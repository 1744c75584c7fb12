"""docs/forwarding.md's Remix and Rails apps behind shopipe, run as written there: their files
are read out of the page, and every forwarded webhook reaches the app's route as its framework
would hand it over.

- Remix: ``app/shopify.server.ts`` (``shopifyApp`` of @shopify/shopify-app-remix, from the npm
  registry) and the route ``app/routes/webhooks.tsx``, whose ``action`` gets a Fetch API
  Request (forward_remix/server.mjs);
- Rails: ``app/controllers/webhooks_controller.rb`` with shopify_app's own verification
  concerns on a plain-Ruby stand-in for Rails (forward_rails/); skipped without ``ruby``.

For each: the app's verification accepts every shipped sample topic (with its topic, shop and
webhook id), and its duplicate check holds: a webhook whose first answer came after the route's
timeout is delivered again and handled once. The whole pipeline runs: signed webhooks POSTed to
a receiver, stored, announced, delivered by a worker with the forward route.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from shopipe_receiver.sender import DEFAULT_SHOP

from tests.forward_kit import (
    APP_SECRET,
    NODE_MODULES,
    ROOT,
    forward_env,
    post_samples,
    read_records,
    receiver,
    served,
    workers,
)
from tests.forward_kit import write_routes as routes_file
from tests.worker_kit import Kit, kit, settled, wait_for

pytestmark = pytest.mark.integration
__all__ = ["kit"]

HERE = Path(__file__).parent
DOCS = ROOT / "docs" / "forwarding.md"
SLOW_TOPIC = "orders/create"  # its first answer comes after the route's timeout
TIMEOUT_SECONDS = 2.0
# The docs' files: a fenced block whose first line is a comment naming the file.
BLOCK = re.compile(r"```(?:ts|tsx|ruby)\n((?://|#) (app/[\w./]+)\n.*?)```", re.S)


def docs_files() -> dict[str, str]:
    return {name: code for code, name in BLOCK.findall(DOCS.read_text())}


def test_the_docs_show_the_app_files_the_tests_run() -> None:
    assert set(docs_files()) == {
        "app/shopify.server.ts",
        "app/routes/webhooks.tsx",
        "app/controllers/webhooks_controller.rb",
    }


def write_docs_files(root: Path, *names: str) -> None:
    files = docs_files()
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(files[name])


def remix(root: Path) -> list[str]:
    """The command serving the docs' Remix route from ``root``."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@shopify" / "shopify-app-remix").is_dir():
        pytest.skip("node and @shopify/shopify-app-remix (make tools) are needed")
    write_docs_files(root, "app/shopify.server.ts", "app/routes/webhooks.tsx")
    # The test's stand-ins for the app's own modules the route imports.
    for name in ("db.server.ts", "handle.server.ts"):
        shutil.copy(HERE / "forward_remix" / name, root / "app" / name)
    (root / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    return [node, str(HERE / "forward_remix" / "server.mjs"), str(root)]


def rails(root: Path) -> list[str]:
    """The command serving the docs' Rails controller from ``root``."""
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip(
            "ruby is not installed (apt-get install ruby): the docs' Rails controller is not run"
        )
    name = "app/controllers/webhooks_controller.rb"
    write_docs_files(root, name)
    return [ruby, str(HERE / "forward_rails" / "server.rb"), str(root / name)]


@contextmanager
def app(command: list[str], record: Path) -> Iterator[str]:
    """The app serving; yields its webhook URL."""
    env = {
        **os.environ,
        "SHOPIFY_API_KEY": "shopipe-test",
        "SHOPIFY_API_SECRET": APP_SECRET,
        "SHOPIFY_APP_URL": "http://127.0.0.1",
        "SCOPES": "read_orders",
        "SHOPIPE_TEST_RECORD": str(record),
    }
    late = str(TIMEOUT_SECONDS + 1.0)
    with served([*command, str(record), SLOW_TOPIC, late], record.with_suffix(".log"), env) as url:
        yield url


@pytest.mark.asyncio
@pytest.mark.parametrize("framework", ["remix", "rails"])
async def test_the_docs_app_verifies_every_forwarded_webhook_and_handles_it_once(
    kit: Kit, tmp_path: Path, framework: str
) -> None:
    record = tmp_path / "app.jsonl"
    command = (remix if framework == "remix" else rails)(tmp_path / framework)
    with app(command, record) as url:
        route = {"topics": ["*"], "url": url, "timeout_seconds": TIMEOUT_SECONDS}
        path = routes_file(tmp_path / "routes.json", {"app": route})
        async with receiver(kit) as rx, workers(kit, forward_env(path)):
            sent = {wid: topic for wid, (topic, _) in (await post_samples(rx.url)).items()}

            def taken() -> set[str]:
                return {
                    r["webhookId"]
                    for r in read_records(record)
                    if r["kind"] == "request" and r["status"] == 200
                }

            async def all_taken() -> bool:
                return set(sent) <= taken()

            await wait_for(all_taken, timeout=90, what="every sample taken by the app")
            await wait_for(lambda: settled(kit), timeout=60, what="every segment finished")
    got = read_records(record)
    requests = [r for r in got if r["kind"] == "request"]
    handled = [r for r in got if r["kind"] == "handled"]
    # The app's verification accepted every delivery (a bad HMAC is its 401).
    assert [r for r in requests if r["status"] != 200] == []
    # Each webhook handled once, with its topic (as the framework names it), shop and id.
    assert Counter(h["webhookId"] for h in handled) == Counter(set(sent))
    assert {h["webhookId"]: h["topic"] for h in handled} == {
        wid: named(topic, framework) for wid, topic in sent.items()
    }
    assert {h["shop"] for h in handled} == {DEFAULT_SHOP}
    # The slow topic's webhook came twice (the worker timed out on its first answer, which
    # came after the route had handled it): the second was a duplicate to the app.
    slow = {wid for wid, topic in sent.items() if topic == SLOW_TOPIC}
    assert slow
    tries = Counter(r["webhookId"] for r in requests)
    assert all(tries[wid] >= 2 for wid in slow), tries
    assert {r["attempt"] for r in requests if r["webhookId"] in slow} >= {"1", "2"}


def named(topic: str, framework: str) -> str:
    """A topic as the app gets it: the Remix library names it as its enum does."""
    return topic.upper().replace("/", "_") if framework == "remix" else topic
