"""Deciding the worker replica count from the backlog. Pure: no I/O, time passed in.

desired = clamp(ceil(backlog / target), min, max). Up at once, by at most ``up_step``; down only
once the need has stayed lower for the whole stabilization window (as HPA does), then one
replica per decision, so a short lull never drops workers a burst is about to need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shopipe.config import OperatorSettings


@dataclass(frozen=True)
class ScalePolicy:
    min_replicas: int
    max_replicas: int
    target_per_worker: int
    up_step: int
    down_window: float

    @classmethod
    def from_settings(cls, s: OperatorSettings) -> ScalePolicy:
        return cls(
            min_replicas=s.min_workers,
            max_replicas=max(s.max_workers, s.min_workers),
            target_per_worker=s.target_backlog_per_worker,
            up_step=s.scale_up_max_step,
            down_window=s.scale_down_window_seconds,
        )

    def desired(self, backlog: int) -> int:
        want = math.ceil(max(backlog, 0) / self.target_per_worker)
        return max(self.min_replicas, min(self.max_replicas, want))


@dataclass(frozen=True)
class ScaleDecision:
    """``replicas`` is what to set, None when nothing changes; ``reason`` is always said."""

    reason: str
    current: int
    desired: int | None
    replicas: int | None = None

    @property
    def changes(self) -> bool:
        return self.replicas is not None and self.replicas != self.current


class Scaler:
    """Remembers since when the need has been lower, the only state scaling down needs."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self.low_since: float | None = None

    def decide(self, backlog: int | None, current: int, now: float) -> ScaleDecision:
        p = self.policy
        if backlog is None:
            # Unmeasurable is not zero: scaling down on a blind spot would starve the stream.
            self.low_since = None
            return ScaleDecision("backlog_unknown", current, None)
        desired = p.desired(backlog)
        if current > p.max_replicas:
            self.low_since = None
            return ScaleDecision("above_max", current, desired, p.max_replicas)
        if current < p.min_replicas or desired > current:
            self.low_since = None
            step = max(p.min_replicas, min(desired, current + p.up_step))
            reason = "below_min" if current < p.min_replicas else "backlog_high"
            return ScaleDecision(reason, current, desired, step)
        if desired == current:
            self.low_since = None
            return ScaleDecision("steady", current, desired)
        if self.low_since is None:
            self.low_since = now
        if now - self.low_since < p.down_window:
            return ScaleDecision("stabilizing", current, desired)
        return ScaleDecision("backlog_low", current, desired, current - 1)
