"""Progress bars for the command line (``shopipe send``, ``shopipe dlq replay``), drawn by tqdm.

A bar is drawn only on a terminal: written to a file or a pipe (a log, CI), it would be hundreds
of ``\\r`` frames, so there it prints nothing and the command's summary line says the outcome.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Never, TextIO

from tqdm import tqdm

Progress = Callable[[int, int], None]  # (done, total)


def bar(what: str = "", stream: TextIO | None = None) -> Progress:
    """A progress callback drawing one bar on ``stream`` (stderr by default) when it is a
    terminal; the bar is closed (its last frame kept) once ``done`` reaches ``total``."""
    out = sys.stderr if stream is None else stream
    shown: list[tqdm[Never]] = []  # created on the first call, when the total is known

    def draw(done: int, total: int) -> None:
        if not shown:
            # disable=None: tqdm's own switch, off when the stream is not a terminal.
            shown.append(tqdm(total=total, desc=what or None, file=out, disable=None))
        t = shown[0]
        t.update(done - t.n)
        if done >= total:
            t.close()

    return draw
