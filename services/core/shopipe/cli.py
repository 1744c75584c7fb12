"""The `shopipe` command. Core commands live here; services add theirs by entry point.

Each entry point in the ``shopipe.commands`` group is a ``register(subparsers)`` function that
adds subcommands whose ``func(args) -> int`` is set with ``set_defaults(func=...)``. Loading them
by entry point keeps core free of service imports.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from shopipe import __version__
from shopipe.errors import ConfigError, PermanentError

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

CORE_COMMANDS = ("shopipe.devstack.cli:register", "shopipe.configdoc:register")


class BrokenCommand(PermanentError):
    """A command's module cannot be imported: the installation is incomplete or broken."""


def _load(spec: str) -> Register:
    module, _, attr = spec.partition(":")
    mod = __import__(module, fromlist=[attr])
    fn: Register = getattr(mod, attr)
    return fn


def _registers() -> list[tuple[str, Callable[[], Register]]]:
    out: list[tuple[str, Callable[[], Register]]] = [
        (spec, functools.partial(_load, spec)) for spec in CORE_COMMANDS
    ]
    for ep in sorted(entry_points(group="shopipe.commands"), key=lambda e: e.name):
        out.append((f"entry point {ep.name} = {ep.value}", ep.load))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopipe", description="A Shopify webhook pipeline that never loses a webhook."
    )
    parser.add_argument("--version", action="version", version=f"shopipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, load in _registers():
        try:
            register = load()
        except ModuleNotFoundError as e:
            # Loud: a command silently missing from --help looks like a typo, not a broken image.
            raise BrokenCommand(f"shopipe: cannot load the commands of {name}: {e}") from e
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except BrokenCommand as e:
        print(e, file=sys.stderr)
        return 1
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
