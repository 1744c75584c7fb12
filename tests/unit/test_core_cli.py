"""The `shopipe` command: a command that cannot be loaded is an error naming it, not a gap."""

from __future__ import annotations

import pytest
from shopipe import cli

pytestmark = pytest.mark.unit


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
