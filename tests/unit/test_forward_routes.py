"""The forward handler's routes file: validated at start, every problem named, no secret shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from shopipe.cli import main
from shopipe.config import WorkerSettings, load_settings
from shopipe.errors import ConfigError
from shopipe_worker.forward.routes import NUMBERS, load, parse
from shopipe_worker.registry import build

pytestmark = pytest.mark.unit

SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
BASE = {"SHOPIPE_S3_BUCKET": "bkt", "SHOPIPE_S3_ACCESS_KEY": "a", "SHOPIPE_S3_SECRET_KEY": "s"}


def one(**route: object) -> dict[str, object]:
    return {"routes": {"app": {"topics": ["orders/*"], "url": "http://127.0.0.1:1/h", **route}}}


def test_a_full_route_is_read_with_its_limits_headers_and_secrets(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n  app:\n    topics: [orders/*, products/update]\n"
        "    url: https://app.example/webhooks\n    timeout_seconds: 3\n    max_in_flight: 4\n"
        f"    rate_per_second: 20\n    headers: {{X-Env: prod}}\n"
        f"    signing: {{secrets: [{SECRET}]}}\n"
    )
    (route,) = load(str(path))
    assert route.topics == ("orders/*", "products/update")
    assert (route.timeout_seconds, route.max_in_flight, route.rate_per_second) == (3.0, 4, 20.0)
    assert route.headers == {"X-Env": "prod"}
    assert [s.get() for s in route.signing_secrets] == [SECRET]
    assert SECRET not in route.describe()
    assert "1 secrets" in route.describe()


def test_json_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(one()))
    assert load(str(path))[0].max_in_flight == 8  # the default


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        (one(timeout=3), "unknown keys timeout"),
        ({"routes": {}, "extra": 1}, "unknown top-level keys extra"),
        (one(topics=["orders/*/x/"]), "bad topic pattern"),
        (one(url="ftp://x/"), "url must be http"),
        (one(max_in_flight=0), "max_in_flight must be between 1"),
        (one(max_in_flight=1.5), "max_in_flight must be a whole number"),
        (one(rate_per_second="fast"), "rate_per_second must be a number"),
        (one(headers={"X-Shopify-Topic": "x"}), "set by the delivery itself"),
        (one(headers={"Content-Type": "x"}), "set by the delivery itself"),
        (one(signing={"secret": SECRET}), "signing takes one key"),
        ({"routes": {"Bad Name": {}}}, "bad route name"),
        ({"routes": []}, "expected a mapping"),
    ],
)
def test_problems_are_refused_with_a_clear_message(doc: object, named: str) -> None:
    with pytest.raises(ConfigError, match="SHOPIPE_FORWARD_ROUTES_FILE") as err:
        parse(doc)
    assert named in str(err.value)


def test_a_signing_secret_that_is_no_base64_is_refused_at_start() -> None:
    """Else every delivery of the route would fail at signing, retried until dead-lettered."""
    bad = "whsec_" + "!!not*base64*at*all!!"
    with pytest.raises(ConfigError, match="not valid base64") as err:
        parse(one(signing={"secrets": [bad]}))
    assert bad not in str(err.value)


def test_a_bad_secret_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        parse(one(signing={"secrets": ["not-a-whsec-secret-value"]}))
    assert "whsec_" in str(err.value)
    assert "not-a-whsec" not in str(err.value)


def test_a_file_that_is_not_yaml_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  app: {url: [whsec_secretvalue\n")
    with pytest.raises(ConfigError, match="not YAML or JSON at line") as err:
        load(str(path))
    assert "secretvalue" not in str(err.value)


def test_the_worker_refuses_forward_without_routes_and_routes_without_forward(
    tmp_path: Path,
) -> None:
    s = load_settings(WorkerSettings, {**BASE, "SHOPIPE_BUILTIN_HANDLERS": "forward"})
    with pytest.raises(ConfigError, match="needs SHOPIPE_FORWARD_ROUTES_FILE"):
        build(s.builtin_handlers, s.handlers, s)
    with pytest.raises(ConfigError, match="forward is not in SHOPIPE_BUILTIN_HANDLERS"):
        load_settings(WorkerSettings, {**BASE, "SHOPIPE_FORWARD_ROUTES_FILE": "x"})


def test_routes_become_handlers_named_for_the_route(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(one()))
    env = {**BASE, "SHOPIPE_BUILTIN_HANDLERS": "forward", "SHOPIPE_FORWARD_ROUTES_FILE": str(path)}
    s = load_settings(WorkerSettings, env)
    reg = build(s.builtin_handlers, s.handlers, s)
    assert [name for name, _ in reg.handlers_for("orders/paid")] == ["forward:app"]
    assert reg.handlers_for("products/update") == []


def test_shopipe_config_check_worker_shows_the_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(one(signing={"secrets": [SECRET]})))
    env = {**BASE, "SHOPIPE_BUILTIN_HANDLERS": "forward", "SHOPIPE_FORWARD_ROUTES_FILE": str(path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["config", "check", "worker"]) == 0
    out = capsys.readouterr().out
    assert "app: orders/* -> http://127.0.0.1:1/h" in out
    assert SECRET not in out
    path.write_text(json.dumps(one(colour="red")))
    assert main(["config", "check", "worker"]) == 2
    assert "unknown keys colour" in capsys.readouterr().err


def test_the_routes_table_of_the_docs_gives_the_code_s_defaults_and_bounds() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "forwarding.md").read_text()
    rows = {
        m.group(1): (m.group(2).strip(), m.group(3).strip())
        for m in re.finditer(r"^\| `([a-z_.]+)` \|([^|]+)\|([^|]*)\|", doc, flags=re.M)
    }
    for key, spec in NUMBERS.items():
        default, bounds = rows[key]
        assert float(default) == spec.default, key
        assert bounds == f"{spec.minimum:g}\u2013{spec.maximum:g}", key
    assert set(rows) == {*NUMBERS, "topics", "url", "headers", "signing.secrets"}


def test_a_url_is_described_without_its_credentials_or_query(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    url = "https://user:hunter2@app.example:8443/hooks?token=s3cret#frag"
    path.write_text(json.dumps({"routes": {"app": {"topics": ["*"], "url": url}}}))
    (route,) = load(str(path))
    assert route.url == url  # delivered to as written
    shown = route.describe()
    for secret in ("hunter2", "s3cret", "user"):
        assert secret not in shown
    assert "https://***@app.example:8443/hooks?***" in shown
