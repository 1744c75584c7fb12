"""Parsing the environment for shopipe.config: typed fields read from SHOPIPE_* variables.

It holds no setting: those are in config.py, kept apart from this machinery so that config.py
reads as the documentation it is.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from shopipe.errors import ConfigError

PREFIX = "SHOPIPE_"
_REQUIRED: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never reach a log: repr and str hide it."""

    _value: str

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"


def setting(
    default: Any = _REQUIRED,
    *,
    help: str,
    unit: str = "",
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    shown: str = "",
) -> Any:
    """Declare one setting. ``unit`` is mandatory in spirit: say seconds, bytes, count...

    ``shown`` replaces the default in the docs when it depends on the machine.
    """
    meta = {
        "help": help,
        "unit": unit,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "shown": shown,
    }
    if default is _REQUIRED:
        return dataclasses.field(default=_REQUIRED, metadata=meta)
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple for list defaults")
    return dataclasses.field(default=default, metadata=meta)


def env_name(field: dataclasses.Field[Any]) -> str:
    return PREFIX + field.name.upper()


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_scalar(tp: Any, raw: str) -> Any:
    if tp is str:
        return raw
    if tp is Secret:
        return Secret(raw)
    if tp is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if tp is int:
        return int(raw.strip())
    if tp is float:
        return float(raw.strip())
    raise TypeError(f"unsupported setting type {tp!r}")


def parse_value(tp: Any, raw: str) -> Any:
    tp, optional = _strip_optional(tp)
    if optional and raw.strip() == "":
        return None
    if typing.get_origin(tp) is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        return tuple(_parse_scalar(inner, p.strip()) for p in raw.split(",") if p.strip())
    return _parse_scalar(tp, raw)


def _check(field: dataclasses.Field[Any], value: Any) -> None:
    choices = field.metadata.get("choices") or ()
    if choices and value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    minimum = field.metadata.get("minimum")
    if minimum is not None and isinstance(value, int | float) and value < minimum:
        raise ValueError(f"must be at least {minimum}")
    maximum = field.metadata.get("maximum")
    if maximum is not None and isinstance(value, int | float) and value > maximum:
        raise ValueError(f"must be at most {maximum}")


T = TypeVar("T")


def load(cls: type[T], environ: Mapping[str, str], known: set[str]) -> T:
    """Build ``cls`` from ``environ``; every problem is gathered into one ConfigError line."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = env_name(field)
        tp = hints[field.name]
        is_secret = Secret in (typing.get_args(tp) or (tp,)) or "Secret" in str(tp)
        if name in environ:
            try:
                value = parse_value(tp, environ[name])
                _check(field, value)
            except (ValueError, TypeError) as e:
                # Never echo a secret's value back; other values help the operator.
                shown = "" if is_secret else f" (got {environ[name]!r})"
                problems.append(f"{name}: {e}{shown}")
                continue
            values[field.name] = value
        elif field.default is _REQUIRED:
            problems.append(f"{name} is required: {field.metadata['help']}")
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name} is not a shopipe setting{hint}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return cls(**values)


def names(cls: type[Any]) -> set[str]:
    return {env_name(f) for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("shopipe.envparse.", "")


def describe(cls: type[Any]) -> list[dict[str, str]]:
    """Rows for docs/configuration.md: name, type, default, unit, help."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        default = field.default
        if field.metadata.get("shown"):
            shown = field.metadata["shown"]
        elif default is _REQUIRED:
            shown = "(required)"
        elif isinstance(default, Secret):
            shown = "(secret)"
        elif isinstance(default, tuple):
            shown = ",".join(str(v) for v in default)
        else:
            shown = str(default)
        rows.append(
            {
                "name": env_name(field),
                "type": _type_name(hints[field.name]),
                "default": shown,
                "unit": field.metadata.get("unit", ""),
                "help": field.metadata.get("help", ""),
            }
        )
    return rows
