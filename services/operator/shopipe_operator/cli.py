"""`shopipe operator`: follow the master, scale workers, restart stale pods."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from typing import Any

from shopipe.config import OperatorSettings, load_settings
from shopipe.logs import setup


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "operator",
        help="watch Sentinel and the backlog; scale workers; restart pods on a stale master",
        description="Settings come from SHOPIPE_* variables (see `shopipe config`).",
    )
    p.add_argument("--dry-run", action="store_true", help="decide and log, change nothing")
    p.add_argument("--backend", help="override SHOPIPE_BACKEND (kubernetes; the dev stack: local)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(OperatorSettings)
    changes: dict[str, Any] = {}
    if args.dry_run:
        changes["dry_run"] = True
    if args.backend:
        changes["backend"] = args.backend
    settings = dataclasses.replace(settings, **changes)
    setup("operator", settings.log_level, settings.log_format)
    # httpx logs every /status probe at INFO: one line per pod per reconcile is noise.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from shopipe_operator.app import run  # after logging: imports log at import time

    asyncio.run(run(settings))
    return 0
