"""The local stack (`shopipe dev` and the test fixtures): real Redis + Sentinel and S3."""

from shopipe.devstack.info import StackInfo
from shopipe.devstack.procs import ProcessTable
from shopipe.devstack.stack import Ports, Stack
from shopipe.devstack.state import StackError

__all__ = ["Ports", "ProcessTable", "Stack", "StackError", "StackInfo"]
