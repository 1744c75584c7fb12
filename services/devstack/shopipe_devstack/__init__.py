"""The local stack (`shopipe dev` and the test fixtures): real Redis + Sentinel and S3.

    stack = Stack(state_dir, sentinel_down_after_ms=1000, failover_timeout_ms=3000)
    info = stack.start()                 # StackInfo; StackError names what failed + its log
    env = info.service_env()             # SHOPIPE_* for a pipeline process
    stack.spawn("worker-0", argv, env)   # runs under the stack's process table
    old = stack.current_master(); stack.kill_redis(old); stack.wait_failover(old)
    stack.restart_redis(old); stack.stop_s3(); stack.start_s3()
    stack.stop()

``Stack(..., supervise=True)`` restarts what dies, as `shopipe dev` does (see ``supervisor``);
the default leaves a killed process dead, as drills expect.

Another process reaches the same stack through its state dir: ``StackInfo.load(state_dir)``,
``ProcessTable(state_dir)`` and ``shopipe_devstack.services.spawn_service``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopipe_devstack.info import StackInfo
    from shopipe_devstack.procs import ProcessTable
    from shopipe_devstack.stack import Ports, Stack
    from shopipe_devstack.state import StackError

__all__ = ["Ports", "ProcessTable", "Stack", "StackError", "StackInfo"]

# Imported on first use: shopipe.config loads this package's settings module in every dev
# process, which must not pull in the whole stack.
_HOMES = {
    "StackInfo": "info",
    "ProcessTable": "procs",
    "Ports": "stack",
    "Stack": "stack",
    "StackError": "state",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
