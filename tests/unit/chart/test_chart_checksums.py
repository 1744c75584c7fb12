"""A changed credential rolls every pod that reads it: Redis and Sentinel as well as the apps
(a Redis left on the old password answers the apps WRONGPASS)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit

VALUES = "inchart-redis-values.yaml"


def secret_users(chart, objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod templates whose containers read the chart's Secret: name -> template metadata."""
    secret = next(o["metadata"]["name"] for o in objs if o["kind"] == "Secret")
    out = {}
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        template = o["spec"]["template"]
        refs = [
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in chart.containers(template["spec"])
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        if secret in refs:
            out[f"{o['kind']}/{o['metadata']['name']}"] = template["metadata"]
    return out


def test_every_pod_reading_the_secret_rolls_when_a_password_changes(chart):
    base = chart.render("-f", chart.chart_dir / "ci" / VALUES)
    changed = chart.render(
        "-f", chart.chart_dir / "ci" / VALUES, "--set", "secrets.redisPassword=" + "n" * 32
    )
    before, after = secret_users(chart, base), secret_users(chart, changed)
    kinds = {name.split("/")[0] + "/" + name.rsplit("-", 1)[1] for name in before}
    # Receiver, worker and operator Deployments; Redis and Sentinel StatefulSets.
    assert {"StatefulSet/redis", "StatefulSet/sentinel", "Deployment/receiver"} <= kinds
    assert len(before) == 5, sorted(before)
    for name, meta in before.items():
        old = meta.get("annotations", {}).get("checksum/secret")
        assert old, f"{name} reads the Secret but has no checksum/secret"
        assert after[name]["annotations"]["checksum/secret"] != old, name


def test_an_existing_secret_is_hashed_too(chart):
    """With existingSecret the Secret is not rendered: the annotation is still there (the live
    Secret's hash at install/upgrade; a constant under helm template, which has no cluster)."""
    objs = chart.render("-f", chart.chart_dir / "ci" / "minimal-values.yaml")
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            annotations = o["spec"]["template"]["metadata"].get("annotations", {})
            assert "checksum/secret" in annotations, o["metadata"]["name"]


def test_a_second_accepted_password_reaches_redis_and_sentinels_and_rolls_everyone(chart):
    """The middle step of a rotation (docs/operations.md): the extra passwords go into the
    Secret, only the Redis and Sentinel pods read them (optional: usually absent), and every
    pod reading the Secret rolls."""
    values = chart.chart_dir / "ci" / VALUES
    base = chart.render("-f", values)
    extra = chart.render(
        "-f", values,
        "--set", "secrets.redisExtraPassword=" + "x" * 20,
        "--set", "secrets.sentinelExtraPassword=" + "y" * 20,
    )  # fmt: skip
    secret = next(o for o in extra if o["kind"] == "Secret")["stringData"]
    assert (secret["redis-password-extra"], secret["sentinel-password-extra"]) == (
        "x" * 20,
        "y" * 20,
    )
    assert (
        "redis-password-extra" not in next(o for o in base if o["kind"] == "Secret")["stringData"]
    )
    readers = set()
    for o in extra:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in chart.containers(o["spec"]["template"]["spec"]):
            refs = {
                e["name"]: e["valueFrom"]["secretKeyRef"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            for name, key in (("REDIS_EXTRA_PASSWORD", "redis-password-extra"),
                              ("SENTINEL_EXTRA_PASSWORD", "sentinel-password-extra")):  # fmt: skip
                if name in refs:
                    assert refs[name]["key"] == key
                    assert refs[name]["optional"] is True
                    readers.add(o["metadata"]["name"].rsplit("-", 1)[1])
    assert readers == {"redis", "sentinel"}
    before, after = secret_users(chart, base), secret_users(chart, extra)
    for name, meta in before.items():
        assert (
            after[name]["annotations"]["checksum/secret"] != meta["annotations"]["checksum/secret"]
        )


def test_extra_passwords_are_refused_beside_an_existing_secret(chart):
    proc = chart.template(
        "-f", chart.chart_dir / "ci" / "minimal-values.yaml",
        "--set", "secrets.redisExtraPassword=" + "x" * 20,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "redisExtraPassword" in proc.stderr
