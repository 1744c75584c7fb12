"""shopipe.malloc: with the mmap threshold pinned, a large block is its own mapping (returned to
the system when freed) even after a larger block was freed, which glibc alone would take as a
reason to raise the threshold and serve such blocks from the heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest
from shopipe.malloc import pin_mmap_threshold

pytestmark = pytest.mark.unit


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mmapped_blocks() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblks)


def _glibc() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(x) for x in version.split(".")) if name == "glibc" else ()


@pytest.mark.skipif(_glibc() < (2, 33), reason="glibc 2.33+ (mallopt, mallinfo2)")
def test_large_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    assert pin_mmap_threshold()
    big = bytes(16 << 20)
    del big  # unpinned, glibc would now serve blocks under 16 MiB from the heap
    before = _mmapped_blocks()
    block = bytes(256 << 10)
    assert _mmapped_blocks() == before + 1
    del block
    assert _mmapped_blocks() == before
