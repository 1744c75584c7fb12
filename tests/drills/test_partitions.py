"""The partition drills (issue 16): the pipeline's processes on separate network hosts, real
network faults between them under load, and the checker's figures after each (see
docs/reliability.md for the fault model and the measured table).
"""

from __future__ import annotations

import pytest

from tests.drills.scenario import Drill

pytestmark = pytest.mark.drill


@pytest.mark.asyncio
async def test_one_sentinel_cut_off_no_failover_no_restart(drill: Drill):
    old = drill.stack.current_master()
    await drill.warm()
    drill.fault(lambda f: f.isolate(["sentinel-2"]))
    await drill.hold(8)  # eight times down-after-milliseconds
    during = drill.stack.current_master()  # the two others still agree
    drill.heal()
    await drill.settle()
    figs = await drill.finish()
    assert during == old
    assert drill.stack.current_master() == old, "a single cut Sentinel caused a failover"
    assert figs.lost == 0
    assert figs.doubled == 0
    assert figs.restarts == []
    assert figs.statuses.keys() == {200}, "one Sentinel away, every webhook still gets a 200"
