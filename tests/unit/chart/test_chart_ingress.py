"""The receiver's Ingress carries the receiver's own limits to ingress-nginx: the body size it
accepts (ingress-nginx's 1 MiB default would refuse larger webhooks the receiver takes) and
proxy timeouts below Shopify's 5 s, never shorter than the receiver's answer deadline."""

from __future__ import annotations

import dataclasses

import pytest
from shopipe.config import SHOPIFY_TIMEOUT_SECONDS, ReceiverSettings

pytestmark = pytest.mark.unit

MINIMAL = "ci/minimal-values.yaml"
NGINX = "nginx.ingress.kubernetes.io/"
ON = ("--set", "receiver.ingress.enabled=true")


def ingress_annotations(chart, *args: str) -> dict[str, str]:
    objs = chart.render("-f", chart.chart_dir / MINIMAL, *ON, *args)
    found: dict[str, str] = chart.one(objs, "Ingress")["metadata"]["annotations"]
    return found


def default_of(name: str) -> object:
    (field,) = [f for f in dataclasses.fields(ReceiverSettings) if f.name == name]
    return field.default


def test_body_size_is_the_receivers_default_body_limit(chart):
    ann = ingress_annotations(chart)
    assert ann[NGINX + "proxy-body-size"] == str(default_of("max_body_bytes"))


def test_body_size_follows_the_receivers_setting(matrix, chart):
    ing = chart.one(matrix["full-values.yaml"], "Ingress")
    # full-values.yaml sets SHOPIPE_MAX_BODY_BYTES: 1048576 for the receiver.
    assert ing["metadata"]["annotations"][NGINX + "proxy-body-size"] == "1048576"


def test_proxy_timeouts_are_below_shopifys_and_not_below_the_answer_deadline(chart):
    ann = ingress_annotations(chart)
    timeouts = {k: int(ann[NGINX + f"proxy-{k}-timeout"]) for k in ("connect", "send", "read")}
    assert all(0 < t < SHOPIFY_TIMEOUT_SECONDS for t in timeouts.values()), timeouts
    assert timeouts["read"] >= float(str(default_of("answer_deadline_seconds")))


def test_explicit_annotations_win(chart):
    ann = ingress_annotations(
        chart,
        "--set-string",
        "receiver.ingress.annotations." + NGINX.replace(".", "\\.") + "proxy-body-size=2m",
    )
    assert ann[NGINX + "proxy-body-size"] == "2m"


def test_an_answer_deadline_past_the_read_timeout_is_refused(chart):
    proc = chart.template(
        "-f",
        chart.chart_dir / MINIMAL,
        *ON,
        "--set",
        "receiver.settings.SHOPIPE_ANSWER_DEADLINE_SECONDS=4.5",
    )
    assert proc.returncode != 0
    assert "readSeconds" in proc.stderr


@pytest.mark.parametrize("value", ["5", "0"])
def test_timeouts_outside_1_to_4_seconds_are_refused_by_the_schema(chart, value):
    proc = chart.template(
        "-f",
        chart.chart_dir / MINIMAL,
        *ON,
        "--set",
        f"receiver.ingress.timeouts.readSeconds={value}",
    )
    assert proc.returncode != 0
