"""What a bench run does: the phases, in order, and the sizes of each (full and ``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    # Up to 256 connections: a flash sale's burst, and where one receiver's group commit peaks
    # on two cores (closed loop: more connections, larger segments, until CPU runs out).
    levels: list[int] = field(default_factory=lambda: [1, 8, 32, 64, 128, 256])
    level_seconds: float = 3.0
    # The receiver's levels run longer: its p99 is a tail over segments, not requests (at 64
    # connections one slow PUT answers some 30 requests late, near 1% of a 3 s level's).
    receiver_level_seconds: float = 6.0
    # Per-level request caps (requests are signed before the clock starts, so they are bounded
    # by what each system can do in level_seconds, with room).
    bare_requests: int = 15000
    receiver_requests: int = 20000
    storage_requests: int = 3000
    naive_requests: int = 1500
    drain_webhooks: int = 6000
    drain_limit: float = 45.0
    e2e_rate: float = 200.0
    soak_seconds: float = 300.0
    # Workers of the end-to-end run: the chart's minimum (operator.minWorkers). A shorter run
    # with one worker comes first, for comparison (0 skips it).
    e2e_workers: int = 2
    single_worker_seconds: float = 60.0
    memory_webhooks: int = 100_000
    memory_bodies: int = 2_000
    memory_limit: float = 240.0
    # Overload: open-loop webhooks/s offered to a receiver whose store is slowed, then stalled
    # (the rate of issue 15's stall measurement); connections cover rate x deadline, with room.
    overload_rate: float = 100.0
    overload_seconds: float = 15.0
    overload_connections: int = 600
    # Takeover: open-loop webhooks/s through two workers, one killed -9 after kill_after s.
    takeover_rate: float = 100.0
    takeover_seconds: float = 40.0
    takeover_kill_after: float = 10.0
    # The sweep phase (not in the default phases: filling the bucket alone takes minutes).
    sweep_segments: int = 200_000
    # Processing 200,000 one-webhook segments went at ~134/s on the shared 2-core machine:
    # 900 s was too short there (121,024 done); on a quiet machine it takes about 6 minutes.
    sweep_limit: float = 1800.0
    # The forward handler: a backlog drained to a local destination, then a steady load at
    # forward_rate for forward_seconds, then a route limited to forward_rate_limit per second.
    forward_webhooks: int = 4000
    forward_limit: float = 60.0
    forward_rate: float = 200.0
    forward_seconds: float = 20.0
    forward_rate_limit: float = 50.0
    # Extra SHOPIPE_* settings of the pipeline processes (defaults of shopipe.config otherwise).
    receiver_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)


FULL = Profile()
QUICK = Profile(
    levels=[1, 16, 64],
    level_seconds=2.0,
    receiver_level_seconds=2.0,
    bare_requests=8000,
    receiver_requests=4000,
    storage_requests=1000,
    naive_requests=300,
    drain_webhooks=1500,
    drain_limit=30.0,
    soak_seconds=30.0,
    single_worker_seconds=0.0,
    memory_webhooks=5_000,
    memory_bodies=500,
    memory_limit=60.0,
    overload_seconds=6.0,
    takeover_seconds=20.0,
    takeover_kill_after=5.0,
    sweep_segments=10_000,
    sweep_limit=300.0,
    forward_webhooks=1000,
    forward_seconds=8.0,
)


# Phases in the order they run. The default fits in 10 minutes (the soak alone is 5); the
# others run as the selections below, each also under 10 minutes (bench/README.md).
ORDER = [
    "memory", "baselines", "ingest", "overload", "drain", "e2e", "takeover", "forward", "sweep",
]  # fmt: skip
DEFAULT = "baselines,ingest,drain,e2e"
SELECTIONS = ["memory,overload,takeover,forward", "sweep"]
