"""`shopipe receiver` (serve webhooks) and `shopipe send` (sign and send sample webhooks)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from shopipe import shopify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("receiver", help="Serve Shopify webhooks (settings from SHOPIPE_*).")
    p.set_defaults(func=run_receiver)

    s = sub.add_parser("send", help="Sign and send sample webhooks to a receiver.")
    s.add_argument("topic", metavar="TOPIC", help=f"one of: {', '.join(shopify.SAMPLE_TOPICS)}")
    s.add_argument("--count", type=int, default=1, help="webhooks to send (default 1)")
    s.add_argument("--concurrency", type=int, default=10, help="connections (default 10)")
    s.add_argument("--payload", type=Path, help="body file (default: the topic's sample)")
    s.add_argument("--url", help="webhook URL (default: $SHOPIPE_WEBHOOK_URL)")
    s.add_argument(
        "--secret", help="Shopify secret (default: the first of $SHOPIPE_SHOPIFY_SECRETS)"
    )
    s.add_argument("--shop", default="example-store.myshopify.com", help="shop domain")
    s.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (none is drawn unless stderr is a terminal)",
    )
    s.set_defaults(func=run_send)


def run_receiver(_: argparse.Namespace) -> int:
    import gc

    from shopipe.config import ReceiverSettings, load_settings
    from shopipe.httpops import run_main
    from shopipe.logs import setup

    from shopipe_receiver.app import Receiver
    from shopipe_receiver.server import uvicorn_options

    settings = load_settings(ReceiverSettings)
    setup("receiver", settings.log_level, settings.log_format)
    receiver = Receiver(settings)

    async def started() -> None:
        await receiver.serve_ops()
        # The heap built at start (botocore's service models above all, ~70k objects) is moved
        # out of the cyclic collector's sight: a full collection then walks only what was made
        # since. Measured on the loaded 2-core bench machine: ~200-290 ms per full collection
        # before, under 1 ms after, a pause the event loop otherwise takes while answers are
        # due at their deadline. Garbage made at start is collected first, not frozen.
        gc.collect()
        gc.freeze()

    return run_main(
        receiver.app,
        settings.http_host,
        settings.http_port,
        on_started=started,
        access_log=False,  # ours is JSON and leaves out what must not be logged
        lifespan="on",
        timeout_graceful_shutdown=15,
        **uvicorn_options(settings),
    )


def run_send(args: argparse.Namespace) -> int:
    from shopipe.config import SendSettings, load_settings
    from shopipe.progress import bar

    from shopipe_receiver.sender import send_many

    if args.count < 1 or args.concurrency < 1:
        print("shopipe send: --count and --concurrency must be at least 1", file=sys.stderr)
        return 2
    if args.payload is not None:
        body = args.payload.read_bytes()
    elif args.topic in shopify.SAMPLE_TOPICS:
        body = shopify.sample(args.topic)
    else:
        print(f"shopipe send: no sample for {args.topic!r}; pass --payload", file=sys.stderr)
        return 2
    # Beside `make dev`, `eval "$(shopipe dev env)"` sets both defaults.
    settings = load_settings(SendSettings)
    url = args.url or settings.webhook_url
    secret = args.secret or next((s.get() for s in settings.shopify_secrets), None)
    if not url or not secret:
        print(
            "shopipe send: pass --url and --secret, or set SHOPIPE_WEBHOOK_URL and "
            'SHOPIPE_SHOPIFY_SECRETS (beside `make dev`: eval "$(shopipe dev env)")',
            file=sys.stderr,
        )
        return 2
    summary = asyncio.run(
        send_many(
            url,
            args.topic,
            body,
            secret,
            count=args.count,
            concurrency=args.concurrency,
            shop=args.shop,
            progress=None if args.quiet else bar(),
        )
    )
    print(summary.render())
    return 0 if summary.statuses.get("200", 0) == summary.sent else 1
