"""Letting go of what a failed call's exception holds, without waiting for the cycle collector.

An exception keeps every frame it passed through (its traceback), and each frame keeps its
callers (``f_back``) with their locals. When one of those locals is the exception itself, the
whole set is a reference cycle: freed only by Python's cyclic collector, whose full collections
come rarely on a large heap. botocore and urllib3 make such a cycle on every S3 request that
fails (urllib3's ``urlopen`` keeps the error in ``new_e``, botocore's ``_get_response`` and
``_send_request`` keep it in ``exception``), and those frames hold the prepared request and its
body: under a stalled store the receiver kept every failed segment for seconds to minutes
(RSS 67 -> 153 MB in a 60 s stall, bench/RESULTS.md).

``release_frames`` clears the locals of the finished frames an exception reaches, so the cycle
is broken and reference counting frees the request at once. The traceback keeps its file and
line numbers (a logged traceback still reads the same), only the locals are gone. Frames still
running (the caller's own, a thread's) are left alone, and so are generator and coroutine
frames: clearing a suspended one would close it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from types import FrameType

_GENERATOR = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    e: BaseException | None = exc
    # Bounded: each step visits an exception not seen before.
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _frames(exc: BaseException) -> Iterator[FrameType]:
    """Each frame the exceptions of ``exc``'s chain passed through, and their callers, once."""
    seen: set[int] = set()
    for e in _chain(exc):
        tb = e.__traceback__
        while tb is not None:
            frame: FrameType | None = tb.tb_frame
            while frame is not None and id(frame) not in seen:
                seen.add(id(frame))
                yield frame
                frame = frame.f_back
            tb = tb.tb_next


def release_frames(exc: BaseException) -> None:
    """Clear the locals of the finished frames ``exc`` reaches (see the module's doc)."""
    for frame in _frames(exc):
        if frame.f_code.co_flags & _GENERATOR:
            continue
        # A frame still running raises: it lets go of its locals when it returns.
        with contextlib.suppress(RuntimeError):
            frame.clear()
