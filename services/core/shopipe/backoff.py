"""Growing delays between attempts: one definition of "double from the first, up to a cap".

Retry loops draw their waits from a ``Backoff`` with jitter: after a failover every pod retries
at once, and delays spread over the window keep them from stampeding the new master. Schedules
that must be exact (the dev stack's restart delays, a record's retry times) use ``doubling``.
"""

from __future__ import annotations

import random


def doubling(first: float, cap: float, attempt: int) -> float:
    """``first`` for attempt 1, doubled for each attempt after it, never more than ``cap``."""
    return min(cap, first * 2.0 ** min(max(0, attempt - 1), 60))


class Backoff:
    """The waits of one retry loop: ``wait()`` after each failure, ``reset()`` after a success.

    ``jitter`` is the share of each delay drawn at random: 1.0 (full jitter) waits anywhere in
    [0, d], 0.5 in [d/2, d], 0.0 exactly d.
    """

    def __init__(self, first: float, cap: float, jitter: float = 1.0) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter is a share of the delay: 0.0 to 1.0")
        self.first, self.cap, self.jitter = first, cap, jitter
        self.failures = 0

    def wait(self) -> float:
        """Seconds to wait after one more failure."""
        self.failures += 1
        d = doubling(self.first, self.cap, self.failures)
        return random.uniform(d * (1.0 - self.jitter), d)

    def reset(self) -> None:
        self.failures = 0
