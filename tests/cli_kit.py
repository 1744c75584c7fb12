"""`python -m shopipe ...` as a user runs it: one home for the CLI tests' subprocess call."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def shopipe(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the ``shopipe`` CLI with ``args``. Its settings are ``env`` alone: the test runner's own
    ``SHOPIPE_*`` variables are dropped, so a test sees what its environment says, nothing else."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SHOPIPE_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "shopipe", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
