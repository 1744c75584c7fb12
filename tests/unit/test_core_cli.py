"""The `shopipe` command: a command that cannot be loaded is an error naming it, not a gap; a
service's command loads that service alone."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from shopipe import cli

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_every_installed_command_loads() -> None:
    listed = cli.build_parser().format_help().split()
    assert {"receiver", "worker", "send", "dlq", "dev"} <= set(listed)


def test_a_command_that_cannot_be_imported_fails_loudly_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "shopipe.no_such_commands:register"
    monkeypatch.setattr(cli, "CORE_COMMANDS", (*cli.CORE_COMMANDS, missing))
    with pytest.raises(cli.BrokenCommand, match=r"shopipe\.no_such_commands"):
        cli.build_parser()
    assert cli.main(["--help"]) == 1
    err = capsys.readouterr().err
    assert missing in err
    assert "No module named 'shopipe.no_such_commands'" in err


# Runs `shopipe receiver --help` as the console script does, then lists what it imported.
PROBE = """
import contextlib, io, sys
from shopipe.cli import main
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
    main(["receiver", "--help"])
assert "usage: shopipe receiver" in out.getvalue(), out.getvalue()
print("\\n".join(sorted(sys.modules)))
"""


def test_receiver_help_imports_nothing_of_the_worker_the_operator_or_the_dev_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert "shopipe_receiver.cli" in out
    others = ("shopipe_worker", "shopipe_operator", "shopipe_devstack")
    assert [m for m in out if m.split(".")[0] in others] == []


def test_the_image_wheel_holds_no_dev_stack() -> None:
    # The images install shopipe's wheel (Dockerfile); its packages and entry points are these.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    where = project["tool"]["setuptools"]["packages"]["find"]["where"]
    assert not any((ROOT / w / "shopipe_devstack").exists() for w in where)
    groups = project["project"]["entry-points"]
    assert not [v for g in groups.values() for v in g.values() if "shopipe_devstack" in v]
