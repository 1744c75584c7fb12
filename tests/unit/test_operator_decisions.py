"""The operator's pure decisions: replica count, stale pods, Sentinel majority, sampling."""

from __future__ import annotations

import pytest
from shopipe import segment
from shopipe.buffer import ObjectInfo
from shopipe.errors import StorageUnavailable
from shopipe.sentinel import connection_name, majority, parse_connection_name
from shopipe_operator.backlog import Backlog, BacklogProbe
from shopipe_operator.scaling import ScalePolicy, Scaler
from shopipe_operator.stale import PodSeen, StaleTracker, pod_of_connection

pytestmark = pytest.mark.unit

A = ("10.0.0.1", 6379)
B = ("10.0.0.2", 6379)
S1, S2, S3, S4 = (("s", i) for i in range(1, 5))


def policy(**kw: float) -> ScalePolicy:
    base = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_per_worker": 200,
        "up_step": 4,
        "down_window": 300.0,
    }
    base.update(kw)
    return ScalePolicy(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backlog", "want"),
    [(0, 1), (1, 1), (200, 1), (201, 2), (1999, 10), (2000, 10), (10**9, 10)],
)
def test_desired_is_ceil_of_backlog_over_target_clamped(backlog: int, want: int) -> None:
    assert policy().desired(backlog) == want


def test_scale_up_is_immediate_but_bounded_by_the_step() -> None:
    s = Scaler(policy())
    d = s.decide(2000, 2, now=0.0)
    assert (d.reason, d.desired, d.replicas) == ("backlog_high", 10, 6)
    d = s.decide(2000, 6, now=1.0)
    assert (d.reason, d.replicas) == ("backlog_high", 10)
    assert s.decide(2000, 10, now=2.0).reason == "steady"


def test_scale_down_waits_the_window_then_goes_one_step_at_a_time() -> None:
    s = Scaler(policy(down_window=300.0))
    d = s.decide(0, 10, now=0.0)
    assert (d.reason, d.replicas, d.changes) == ("stabilizing", None, False)
    assert s.decide(0, 10, now=299.0).reason == "stabilizing"
    d = s.decide(0, 10, now=300.0)
    assert (d.reason, d.replicas) == ("backlog_low", 9)
    assert s.decide(0, 9, now=301.0).replicas == 8


def test_a_burst_during_the_window_restarts_it() -> None:
    s = Scaler(policy(down_window=300.0))
    s.decide(0, 5, now=0.0)
    assert s.decide(1000, 5, now=200.0).reason == "steady"  # need is back: window resets
    assert s.decide(0, 5, now=400.0).reason == "stabilizing"
    assert s.decide(0, 5, now=700.0).replicas == 4


def test_unknown_backlog_leaves_replicas_alone_and_resets_the_window() -> None:
    s = Scaler(policy(down_window=10.0))
    s.decide(0, 5, now=0.0)
    d = s.decide(None, 5, now=20.0)
    assert (d.reason, d.replicas, d.desired) == ("backlog_unknown", None, None)
    assert s.decide(0, 5, now=21.0).reason == "stabilizing"


def test_replicas_outside_bounds_are_brought_back() -> None:
    s = Scaler(policy(min_replicas=2, max_replicas=4))
    assert s.decide(0, 0, now=0.0).replicas == 2
    assert s.decide(0, 9, now=0.0).replicas == 4
    d = s.decide(2000, 0, now=0.0)  # below min with a backlog: min, then up to the step
    assert (d.reason, d.replicas) == ("below_min", 4)


def test_pod_is_stale_only_after_the_grace_period() -> None:
    t = StaleTracker(grace=15.0)
    pods = [PodSeen("w1", "10.0.0.2:6379"), PodSeen("w2", "10.0.0.1:6379")]
    assert t.observe("10.0.0.1:6379", pods, now=0.0) == []
    assert t.observe("10.0.0.1:6379", pods, now=14.9) == []
    assert t.observe("10.0.0.1:6379", pods, now=15.0) == ["w1"]
    assert t.reason("w1") == "status_names_old_master"


def test_a_pod_that_catches_up_is_forgotten() -> None:
    t = StaleTracker(grace=5.0)
    t.observe("m:1", [PodSeen("w1", "old:1")], now=0.0)
    t.observe("m:1", [PodSeen("w1", "m:1")], now=3.0)
    assert t.observe("m:1", [PodSeen("w1", "old:1")], now=6.0) == []


def test_silent_pod_is_never_stale_but_a_connection_on_an_old_master_is() -> None:
    t = StaleTracker(grace=0.0)
    pods = [PodSeen("quiet", None), PodSeen("w2", None, ("10.0.0.2:6379",))]
    assert t.observe("10.0.0.1:6379", pods, now=0.0) == ["w2"]
    assert t.reason("w2") == "connection_on_old_master"


def test_nothing_is_stale_while_the_master_is_unknown() -> None:
    t = StaleTracker(grace=0.0)
    pods = [PodSeen("w1", "old:1")]
    t.observe("m:1", pods, now=0.0)
    assert t.observe(None, pods, now=100.0) == []
    # The grace period starts again once a master is known.
    t.grace = 10.0
    assert t.observe("m:1", pods, now=101.0) == []


def test_stale_pods_come_longest_stale_first_and_forget_resets() -> None:
    t = StaleTracker(grace=1.0)
    t.observe("m:1", [PodSeen("b", "x:1")], now=0.0)
    stale = t.observe("m:1", [PodSeen("a", "x:1"), PodSeen("b", "x:1")], now=5.0)
    assert stale == ["b"]
    assert t.observe("m:1", [PodSeen("a", "x:1"), PodSeen("b", "x:1")], now=6.0) == ["b", "a"]
    t.forget("b")
    assert t.observe("m:1", [PodSeen("a", "x:1"), PodSeen("b", "x:1")], now=6.5) == ["a"]


@pytest.mark.parametrize(
    ("answers", "configured", "want"),
    [
        ({S1: A, S2: A, S3: A}, 3, A),
        ({S1: A, S2: A, S3: B}, 3, A),
        ({S1: A, S2: A, S3: None}, 3, A),
        ({S1: A, S2: None, S3: None}, 3, None),  # silent Sentinels count against
        ({S1: A, S2: B, S3: None}, 3, None),
        ({S1: A, S2: B, S3: ("c", 1)}, 3, None),
        ({S1: A, S2: A, S3: B, S4: B}, 4, None),  # a tie is no majority
        ({S1: A, S2: A}, 3, A),  # answers only from those asked, still 2 of 3
        ({}, 3, None),
    ],
)
def test_master_needs_a_majority_of_configured_sentinels(answers, configured, want) -> None:
    assert majority(answers, configured) == want


def test_connection_names_map_to_pods_except_the_operators() -> None:
    names = [
        connection_name("worker", "worker-1"),
        "",
        connection_name("operator", "op"),
        connection_name("receiver", "recv-0"),
        "other",
        "shopipe:worker:",
    ]
    pods = [pod_of_connection(n) for n in names]
    assert [p for p in pods if p] == ["worker-1", "recv-0"]


def test_a_connection_name_parses_back_to_its_role_and_pod() -> None:
    assert parse_connection_name(connection_name("worker", "w-1:x")) == ("worker", "w-1:x")
    assert parse_connection_name("redis:worker:w-1") is None


class CountingLister:
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.fail = False

    async def list(self, prefix: str, *, limit: int | None = None) -> list[ObjectInfo]:
        self.calls += 1
        if self.fail:
            raise StorageUnavailable("s3 list: 503")
        assert prefix == "incoming/"
        return [ObjectInfo(segment.new_key(1.0), 1, 0.0)] * min(self.n, limit or self.n)


@pytest.mark.asyncio
async def test_incoming_listing_is_sampled_at_most_every_interval() -> None:
    now = [0.0]
    lister = CountingLister(7)
    probe = BacklogProbe("s", "g", lister, 30.0, cap=1000, clock=lambda: now[0])
    assert await probe.incoming() == 7
    lister.n = 9
    now[0] = 29.0
    assert await probe.incoming() == 7  # the sample is reused, no new listing
    assert lister.calls == 1
    now[0] = 30.0
    assert await probe.incoming() == 9
    assert lister.calls == 2


@pytest.mark.asyncio
async def test_unlistable_bucket_or_unknown_master_makes_the_backlog_unknown() -> None:
    lister = CountingLister(3)
    lister.fail = True
    probe = BacklogProbe("s", "g", lister, 0.0, cap=1000)
    b = await probe.measure(None)
    assert (b.lag, b.pending, b.incoming, b.total) == (None, None, None, None)
    lister.fail = False
    assert (await probe.measure(None)).total is None  # no master: stream unmeasured


def test_segments_waiting_on_a_forward_destination_leave_the_scaling_backlog() -> None:
    # They are pending and still under incoming/: out of both counts, never below zero.
    assert Backlog(lag=10, pending=30, incoming=40, waiting=25).total == 10 + 5 + 15
    assert Backlog(lag=0, pending=3, incoming=0, waiting=8).total == 0
    assert Backlog(lag=None, pending=3, incoming=0, waiting=1).total is None


def test_a_backlog_bound_to_saturated_routes_leaves_the_lag_out() -> None:
    # The lag and its segments under incoming/ leave; what the workers hold and are not
    # waiting on stays.
    b = Backlog(lag=150, pending=30, incoming=180, waiting=10, bound=True)
    assert b.total == 20 + 20
    assert Backlog(lag=150, pending=30, incoming=180, waiting=10).total == 150 + 20 + 170
    assert Backlog(lag=0, pending=0, incoming=0, bound=True).total == 0
