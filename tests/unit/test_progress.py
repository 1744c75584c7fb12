"""Progress bars: drawn on a terminal, silent in a log."""

from __future__ import annotations

import io

import pytest
from shopipe.progress import bar

pytestmark = pytest.mark.unit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_and_no_carriage_return_when_not_a_terminal() -> None:
    log = io.StringIO()
    draw = bar("send", log)
    for done in range(1, 501):
        draw(done, 500)
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar_that_ends_at_the_total() -> None:
    term = Terminal()
    draw = bar("replay", term)
    for done in range(1, 4):
        draw(done, 3)
    text = term.getvalue()
    assert "\r" in text
    assert text.rstrip("\n").rsplit("\r", 1)[-1].startswith("replay: 100%")
    assert "3/3" in text.rsplit("\r", 1)[-1]
    assert text.endswith("\n")  # closed: the next line starts clean
