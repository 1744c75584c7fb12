"""The `shopipe` command. Core commands live here; services add theirs by entry point.

Each entry point in the ``shopipe.commands`` group is a ``register(subparsers)`` function that
adds subcommands whose ``func(args) -> int`` is set with ``set_defaults(func=...)``. Loading them
by entry point keeps core free of service imports (the dev stack's ``dev`` comes so too).

An entry point is named after the first subcommand it adds. ``shopipe NAME ...`` loads only the
entry point NAME when there is one, so that ``shopipe receiver`` imports nothing of the worker,
the operator or the dev stack; any other command line (``--help``, ``send``) loads them all.
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

CORE_COMMANDS = ("shopipe.configdoc:register",)


class BrokenCommand(PermanentError):
    """A command's module cannot be imported: the installation is incomplete or broken."""


def _load(spec: str) -> Register:
    module, _, attr = spec.partition(":")
    mod = __import__(module, fromlist=[attr])
    fn: Register = getattr(mod, attr)
    return fn


def _registers(command: str | None) -> list[tuple[str, Callable[[], Register]]]:
    found = sorted(entry_points(group="shopipe.commands"), key=lambda e: e.name)
    named = [ep for ep in found if ep.name == command]
    if named:
        return [(f"entry point {ep.name} = {ep.value}", ep.load) for ep in named]
    out: list[tuple[str, Callable[[], Register]]] = [
        (spec, functools.partial(_load, spec)) for spec in CORE_COMMANDS
    ]
    out += [(f"entry point {ep.name} = {ep.value}", ep.load) for ep in found]
    return out


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: its first word not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: with every command when ``argv`` names none we can load alone."""
    parser = argparse.ArgumentParser(
        prog="shopipe", description="A Shopify webhook pipeline that never loses a webhook."
    )
    parser.add_argument("--version", action="version", version=f"shopipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, load in _registers(_command(argv)):
        try:
            register = load()
        except ModuleNotFoundError as e:
            # Loud: a command silently missing from --help looks like a typo, not a broken image.
            raise BrokenCommand(f"shopipe: cannot load the commands of {name}: {e}") from e
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(argv)
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
