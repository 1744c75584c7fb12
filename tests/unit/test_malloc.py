"""shopipe.malloc: with the mmap threshold pinned, a large block is its own mapping (returned to
the system when freed) even after a larger block was freed, which glibc alone would take as a
reason to raise the threshold and serve such blocks from the heap.

The check runs in a process of its own: glibc's counters are the whole process's, and the test
runner's other threads (pools left by earlier tests) may map or unmap blocks meanwhile."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CHECK = """
import ctypes, ctypes.util, sys
from shopipe.malloc import pin_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
pinned = sys.argv[1] == "pinned"
if pinned:
    assert pin_mmap_threshold()
big = bytes(16 << 20)
del big  # unpinned, glibc now serves blocks under 16 MiB from the heap
before = libc.mallinfo2().hblks
block = bytes(256 << 10)
print(libc.mallinfo2().hblks - before)
"""


def _glibc() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(x) for x in version.split(".")) if name == "glibc" else ()


def _mapped_after_a_larger_block_was_freed(mode: str) -> int:
    """How many mappings a 256 KiB block got, after a 16 MiB one was freed."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(_glibc() < (2, 33), reason="glibc 2.33+ (mallopt, mallinfo2)")
def test_large_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    assert _mapped_after_a_larger_block_was_freed("pinned") == 1
    # The contrast: glibc alone serves the same block from the heap.
    assert _mapped_after_a_larger_block_was_freed("glibc") == 0
