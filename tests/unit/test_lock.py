"""The locks (requirements/*.txt, `make lock`) pin every dependency pyproject.toml names: a
dependency added without re-locking would be missing from the images, from CI and from `make`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted(specs: list[str]) -> set[str]:
    out = set()
    for spec in specs:
        m = NAME.match(spec)
        assert m, spec
        out.add(_norm(m.group(0)))
    return out


def _pinned(lock: str) -> set[str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {_norm(line.split("==", 1)[0]) for line in text.splitlines() if "==" in line}


def test_the_locks_pin_every_dependency_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _wanted(project["dependencies"])
    dev = _wanted(project["optional-dependencies"]["dev"])
    assert runtime - _pinned("image.txt") == set(), "run `make lock`"
    assert (runtime | dev) - _pinned("dev.txt") == set(), "run `make lock`"
    assert _pinned("image.txt") <= _pinned("dev.txt"), "the images ship what the tests ran"
