"""The dev stack's settings: `shopipe dev` and the operator's local backend.

Registered in the ``shopipe.settings`` entry point group, so that shopipe.config knows these
names (and documents them) wherever the dev stack is installed, and refuses them where it is not.
"""

from __future__ import annotations

import dataclasses

from shopipe.envparse import setting


@dataclasses.dataclass(frozen=True)
class DevSettings:
    """`shopipe dev` options that may come from the environment (flags override)."""

    state_dir: str = setting(".shopipe", help="Directory of the local stack's state and logs.")
    dev_bind: str = setting("127.0.0.1", help="Address the local stack binds (loopback).")
