"""Object names within Kubernetes' limits for any release name helm accepts (53 characters)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.chart.conftest import parse_docs

pytestmark = pytest.mark.unit

# 44 characters: the length that broke the Sentinels (their pods' controller-revision-hash label
# passed 63 characters), and the longest release name helm accepts.
RELEASES = ["a" * 44, "shopipe-" + "x" * 36, "r" * 53]


def render(chart, release: str) -> list[dict[str, Any]]:
    proc = chart.run(
        [chart.helm, "template", release, chart.chart_dir, "--namespace", chart.namespace,
         "-f", chart.chart_dir / "ci" / "inchart-redis-values.yaml"],
    )  # fmt: skip
    return parse_docs(proc.stdout)


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: f"{len(r)}-chars")
def test_statefulset_names_leave_room_for_the_revision_hash_label(chart, release):
    objs = render(chart, release)
    sets = {o["metadata"]["name"] for o in objs if o["kind"] == "StatefulSet"}
    assert len(sets) == 2  # Redis and Sentinel
    for name in sets:
        # controller-revision-hash = <name>-<hash of up to 10 characters>, a label value (<= 63).
        assert len(name) <= 52, name
    assert {n.rsplit("-", 1)[1] for n in sets} == {"redis", "sentinel"}
    for o in objs:
        assert len(o["metadata"]["name"]) <= 63, o["metadata"]["name"]


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: f"{len(r)}-chars")
def test_every_reference_to_a_statefulset_uses_its_name(chart, release):
    """The scripts and the apps find the pods by the StatefulSet's name: the cut name is the one
    they are given, and every Sentinel address the apps get is one of its pods."""
    objs = render(chart, release)
    sts = {o["metadata"]["name"]: o for o in objs if o["kind"] == "StatefulSet"}
    sentinel = next(n for n in sts if n.endswith("-sentinel"))
    config = next(o for o in objs if o["kind"] == "ConfigMap" and "SHOPIPE_SENTINELS" in o["data"])
    hosts = [a.rsplit(":", 1)[0] for a in config["data"]["SHOPIPE_SENTINELS"].split(",")]
    headless = sts[sentinel]["spec"]["serviceName"]
    assert hosts == [f"{sentinel}-{i}.{headless}" for i in range(len(hosts))]
    for o in sts.values():
        for c in o["spec"]["template"]["spec"].get("initContainers", []):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "REDIS_STS" in env:
                assert env["REDIS_STS"] in sts
                assert env["SENTINEL_STS"] == sentinel
