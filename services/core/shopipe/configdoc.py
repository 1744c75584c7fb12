"""`shopipe config`: print the settings reference, or check the environment of a service."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

from shopipe.config import all_settings, describe_all, load_settings


def services() -> dict[str, type]:
    """``receiver`` -> ReceiverSettings, ...; the dev stack's ``dev`` where it is installed."""
    return {cls.__name__.removesuffix("Settings").lower(): cls for cls in all_settings()}


HEADER = """# Configuration

Every shopipe process reads its settings from `SHOPIPE_*` environment variables at start and
stops with one line naming each missing or wrong variable (secret values are never printed).
A `SHOPIPE_*` name that no shopipe service knows is an error: typos do not pass silently.
Regenerate this file with `shopipe config docs > docs/configuration.md` (a test checks it).
"""


def markdown() -> str:
    out = [HEADER]
    seen: set[str] = set()
    for cls_name, rows in describe_all().items():
        title = cls_name.removesuffix("Settings")
        fresh = [r for r in rows if r["name"] not in seen]
        shared = len(rows) - len(fresh)
        out.append(f"\n## {title}\n")
        if shared:
            out.append(f"Also reads the {shared} shared settings listed above.\n")
        out.append("| variable | type | default | unit | meaning |\n|---|---|---|---|---|")
        for r in fresh:
            seen.add(r["name"])
            cells = [f"`{r['name']}`", r["type"], f"`{r['default']}`", r["unit"], r["help"]]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def _docs(_: argparse.Namespace) -> int:
    print(markdown(), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    settings: object = load_settings(services()[args.service])
    # Configuration a service reads from files its settings name (the forward handler's
    # routes): checked and shown by the service, found by entry point (core imports none).
    lines: list[str] = []
    for ep in entry_points(group="shopipe.config", name=args.service):
        lines += ep.load()(settings)
    print(f"{args.service}: configuration valid ({type(settings).__name__})")
    for line in lines:
        print(f"  {line}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="settings reference and checks")
    inner = p.add_subparsers(dest="config_command", required=True)
    inner.add_parser("docs", help="print docs/configuration.md").set_defaults(func=_docs)
    check = inner.add_parser("check", help="validate this environment for a service")
    check.add_argument("service", choices=sorted(services()))
    check.set_defaults(func=_check)
