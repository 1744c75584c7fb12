"""The body bytes one receiver process holds in memory, on a budget.

A request takes its declared length from the budget before it reads a byte of its body (the
body cap when no length is declared, given back down to the real size once read). The bytes
stay taken while the body waits in an open segment or rides a PUT. They go back when that PUT
ends, whatever the request's answer was (a request answered 503 at its deadline may sit in a
segment being written: its body is in memory until then), or as soon as the request stops
waiting if its segment's PUT had not started (its record leaves the segment). So the budget
bounds what is held, not what was answered. When a request's length does not fit, it is answered 503
at once, unread.

Each body is also copied once into its encoded segment while that segment is PUT, so the
process holds at most about twice the budget in bodies.
"""

from __future__ import annotations

import dataclasses


class BodyBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # highest ``held`` so far (status, tests)

    def take(self, n: int) -> bool:
        """Take ``n`` bytes if they fit; False (nothing taken) if they do not."""
        if self.held + n > self.limit:
            return False
        self.held += n
        self.peak = max(self.peak, self.held)
        return True

    def give(self, n: int) -> None:
        self.held -= n


@dataclasses.dataclass
class Held:
    """Body bytes one request took from the budget and still owes it."""

    n: int
