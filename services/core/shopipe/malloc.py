"""Large memory blocks go back to the system when freed (glibc's malloc).

glibc serves a request of 128 KiB or more with its own mmap, unmapped when freed, but it raises
that threshold to the size of each such block freed (up to 32 MiB). After the first multi-MiB
segment is freed, segments, botocore's 1 MiB payload-hashing reads and the like come from the
heap, whose freed pages stay in the process's RSS between smaller blocks. Under a slowed then
stalled store the receiver's RSS stepped up with the largest segments and stayed there
(bench/RESULTS.md, overload). Setting the threshold pins it: blocks of 128 KiB and more are
always their own mapping and are returned at once; smaller ones (bodies of at most a few
tens of KiB, Python's own small-object arenas) are unaffected.

Measured in the bench's overload phase (quick, load average 8-11): unpinned, the receiver's RSS
stayed at 92 MB after its 96 MB peak once the store recovered; pinned, it fell from 97 to 87 MB
within seconds (and 92 -> 83, 89 -> 82 in other runs). Fewer per-thread arenas instead
(``MALLOC_ARENA_MAX=2``) changed nothing measurable (99 MB highest).

Done through ``mallopt`` by the process's entry point rather than ``MALLOC_MMAP_THRESHOLD_`` in
every image, chart and dev-stack environment: one place, the same in the bench, the dev stack
and production. On a C library without ``mallopt`` (musl, macOS) it does nothing.
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
