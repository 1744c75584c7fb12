"""`shopipe receiver` (serve webhooks) and `shopipe send` (sign and send sample webhooks)."""

from __future__ import annotations

import argparse
import asyncio
import os
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
    s.add_argument("--url", help="webhook URL (default: the dev stack's receiver)")
    s.add_argument("--secret", help="Shopify secret (default: the dev stack's)")
    s.add_argument("--shop", default="example-store.myshopify.com", help="shop domain")
    s.add_argument("--state-dir", default=None, help="dev stack state dir (default .shopipe)")
    s.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (none is drawn unless stderr is a terminal)",
    )
    s.set_defaults(func=run_send)


def run_receiver(_: argparse.Namespace) -> int:
    from shopipe.config import ReceiverSettings, load_settings
    from shopipe.httpops import run_main
    from shopipe.logs import setup

    from shopipe_receiver.app import Receiver
    from shopipe_receiver.server import uvicorn_options

    settings = load_settings(ReceiverSettings)
    setup("receiver", settings.log_level, settings.log_format)
    receiver = Receiver(settings)
    return run_main(
        receiver.app,
        settings.http_host,
        settings.http_port,
        on_started=receiver.serve_ops,
        access_log=False,  # ours is JSON and leaves out what must not be logged
        lifespan="on",
        timeout_graceful_shutdown=15,
        **uvicorn_options(settings),
    )


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("SHOPIPE_STATE_DIR") or ".shopipe")


def _stack_defaults(state_dir: Path) -> tuple[str | None, str | None]:
    """The dev stack's receiver URL and Shopify secret, when a stack ran in ``state_dir``."""
    url: str | None = None
    secret: str | None = None
    secret_path = state_dir / "secrets" / "shopify_secret"
    if secret_path.exists():
        secret = secret_path.read_text().strip() or None
    try:
        from shopipe.devstack.info import StackInfo
        from shopipe.devstack.procs import ProcessTable
        from shopipe.devstack.services import services
    except ModuleNotFoundError:
        return url, secret
    if (state_dir / "procs").is_dir() and (state_dir / "stack.json").exists():
        info = StackInfo.load(state_dir)
        for svc in services(ProcessTable(state_dir)):
            if svc.kind == "receiver":
                url = svc.url(info.bind, "/webhooks/shopify")
                break
    return url, secret


def run_send(args: argparse.Namespace) -> int:
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
    url, secret = args.url, args.secret
    if url is None or secret is None:
        stack_url, stack_secret = _stack_defaults(_state_dir(args))
        url, secret = url or stack_url, secret or stack_secret
    if url is None or secret is None:
        print("shopipe send: no running dev stack found; pass --url and --secret", file=sys.stderr)
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
