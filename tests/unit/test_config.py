"""shopipe.config: typos caught with a suggestion, secrets never echoed, every field explained."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from shopipe.config import (
    CommonSettings,
    OperatorSettings,
    ReceiverSettings,
    Secret,
    SendSettings,
    WorkerSettings,
    all_settings,
    known_names,
    load_settings,
)
from shopipe.errors import ConfigError, PermanentError
from shopipe_devstack.settings import DevSettings

pytestmark = pytest.mark.unit

ALL = [ReceiverSettings, WorkerSettings, OperatorSettings, SendSettings, DevSettings]
BASE = {
    "SHOPIPE_S3_BUCKET": "shopipe",
    "SHOPIPE_S3_ACCESS_KEY": "AKIDEXAMPLE",
    "SHOPIPE_S3_SECRET_KEY": "s3-secret-value-123",
}
RECEIVER = {**BASE, "SHOPIPE_SHOPIFY_SECRETS": "shopify-secret-abc,shopify-secret-def"}


def test_a_valid_environment_loads() -> None:
    s = load_settings(ReceiverSettings, RECEIVER)
    assert s.s3_bucket == "shopipe"
    assert [x.get() for x in s.shopify_secrets] == ["shopify-secret-abc", "shopify-secret-def"]
    w = load_settings(WorkerSettings, {**BASE, "SHOPIPE_CONCURRENCY": "8"})
    assert w.concurrency == 8


def test_an_unknown_name_is_rejected_with_a_did_you_mean() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(WorkerSettings, {**BASE, "SHOPIPE_CONCURENCY": "8"})
    assert "SHOPIPE_CONCURENCY is not a shopipe setting" in str(e.value)
    assert "did you mean SHOPIPE_CONCURRENCY?" in str(e.value)
    assert isinstance(e.value, PermanentError)


def test_a_name_of_another_service_is_accepted() -> None:
    # One ConfigMap often feeds every pod: a worker must not refuse a receiver's setting.
    load_settings(WorkerSettings, {**BASE, "SHOPIPE_WEBHOOK_PATH": "/hooks"})


def test_a_missing_required_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="SHOPIPE_S3_BUCKET is required"):
        load_settings(WorkerSettings, {k: v for k, v in BASE.items() if k != "SHOPIPE_S3_BUCKET"})


def test_every_problem_is_reported_in_one_line() -> None:
    env = {**BASE, "SHOPIPE_CONCURRENCY": "many", "SHOPIPE_LOG_LEVEL": "loud"}
    with pytest.raises(ConfigError) as e:
        load_settings(WorkerSettings, env)
    text = str(e.value)
    assert "\n" not in text
    assert "SHOPIPE_CONCURRENCY" in text
    assert "SHOPIPE_LOG_LEVEL" in text
    assert "'many'" in text  # non-secret values are shown: they help


def test_a_bad_secret_value_is_never_printed() -> None:
    secret = "do-not-print-this-secret-987"
    env = {**RECEIVER, "SHOPIPE_REDIS_PASSWORD": secret, "SHOPIPE_S3_SECRET_KEY": secret}
    env["SHOPIPE_MAX_BODY_BYTES"] = secret  # a non-secret field given a secret by mistake
    env["SHOPIPE_SHOPIFY_SECRETS"] = secret
    with pytest.raises(ConfigError) as e:
        load_settings(ReceiverSettings, env)
    assert "SHOPIPE_MAX_BODY_BYTES" in str(e.value)
    s = load_settings(ReceiverSettings, {**RECEIVER, "SHOPIPE_REDIS_PASSWORD": secret})
    for shown in (str(s), repr(s), str(s.redis_password), f"{s.redis_password}"):
        assert secret not in shown
    assert s.redis_password is not None
    assert s.redis_password.get() == secret


def test_secret_hides_its_value() -> None:
    s = Secret("hunter2-hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "hunter2" not in repr([s])
    assert s.get() == "hunter2-hunter2"


@pytest.mark.parametrize("cls", ALL)
def test_every_field_has_help(cls: type[Any]) -> None:
    for field in dataclasses.fields(cls):
        text = field.metadata.get("help", "")
        assert text, f"{cls.__name__}.{field.name} has no help"
        assert text.endswith("."), f"{cls.__name__}.{field.name}: help is not a sentence"


def test_every_secret_field_is_typed_secret() -> None:
    hints = {f.name: str(f.type) for cls in ALL for f in dataclasses.fields(cls)}
    for name in ("redis_password", "sentinel_password", "s3_access_key", "s3_secret_key"):
        assert "Secret" in hints[name], name
    assert "Secret" in hints["shopify_secrets"]


def test_known_names_cover_every_service() -> None:
    names = known_names()
    for cls in [*ALL, CommonSettings]:
        for field in dataclasses.fields(cls):
            assert f"SHOPIPE_{field.name.upper()}" in names


def test_done_markers_outlive_shopifys_retry_window() -> None:
    from shopipe.config import MIN_DEDUP_TTL_SECONDS
    from shopipe.shopify import RETRY_WINDOW_SECONDS

    w = load_settings(WorkerSettings, BASE)
    assert w.dedup_ttl_seconds == 24 * 3600
    assert MIN_DEDUP_TTL_SECONDS > RETRY_WINDOW_SECONDS == 4 * 3600
    floor = str(MIN_DEDUP_TTL_SECONDS)
    assert load_settings(WorkerSettings, {**BASE, "SHOPIPE_DEDUP_TTL_SECONDS": floor})
    with pytest.raises(ConfigError, match="SHOPIPE_DEDUP_TTL_SECONDS: must be at least"):
        load_settings(WorkerSettings, {**BASE, "SHOPIPE_DEDUP_TTL_SECONDS": str(4 * 3600)})


def test_the_dev_stacks_settings_are_known_through_its_entry_point_only() -> None:
    # Installed here (make installs the dev stack): known, documented; core never imports it.
    assert DevSettings in all_settings()
    assert "SHOPIPE_STATE_DIR" in known_names()
    assert "state_dir" not in {f.name for f in dataclasses.fields(OperatorSettings)}
