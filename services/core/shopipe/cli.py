"""The `shopipe` command. Core commands live here; services add theirs by entry point.

Each entry point in the ``shopipe.commands`` group is a ``register(subparsers)`` function that
adds subcommands whose ``func(args) -> int`` is set with ``set_defaults(func=...)``. Loading them
by entry point keeps core free of service imports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from shopipe import __version__
from shopipe.errors import ConfigError

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

CORE_COMMANDS = ("shopipe.devstack.cli:register", "shopipe.configdoc:register")


def _load(spec: str) -> Register:
    module, _, attr = spec.partition(":")
    mod = __import__(module, fromlist=[attr])
    fn: Register = getattr(mod, attr)
    return fn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopipe", description="A Shopify webhook pipeline that never loses a webhook."
    )
    parser.add_argument("--version", action="version", version=f"shopipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for spec in CORE_COMMANDS:
        try:
            _load(spec)(sub)
        except ModuleNotFoundError:
            continue  # a core command still being built must not break the others
    for ep in sorted(entry_points(group="shopipe.commands"), key=lambda e: e.name):
        try:
            fn: Register = ep.load()
        except ModuleNotFoundError:
            continue
        fn(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except ConfigError as e:
        # One line naming the variable; never a traceback with values in it.
        print(f"shopipe {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
