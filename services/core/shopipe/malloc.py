"""Large memory blocks go back to the system when freed (glibc's malloc).

glibc serves a request of 128 KiB or more with its own mmap, unmapped when freed, but it raises
that threshold to the size of each such block freed (up to 32 MiB). After the first multi-MiB
segment is freed, segments, botocore's 1 MiB payload-hashing reads and the like come from the
heap, whose freed pages stay in the process's RSS between smaller blocks. Under a slowed then
stalled store the receiver's RSS stepped up with the largest segments and stayed there
(bench/RESULTS.md, overload). Setting the threshold pins it: blocks of 128 KiB and more are
always their own mapping and are returned at once; smaller ones (bodies of at most a few
tens of KiB, Python's own small-object arenas) are unaffected.

Measured in the bench's overload phase: with the threshold pinned, the highest RSS of the
slowed and stalled stages went from 96-99 MB to about 90 MB over 72 MB healthy, and it fell
back after the stall instead of staying at its highest.

Done through ``mallopt`` at start rather than ``MALLOC_MMAP_THRESHOLD_`` in every image, chart
and dev-stack environment: one place, and the same in tests, the bench and production. On a C
library without ``mallopt`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's own initial threshold, kept from then on


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes; False where there is no mallopt."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
