"""TLS to Redis and the Sentinels (SHOPIPE_REDIS_TLS, SHOPIPE_REDIS_TLS_CA_FILE, rediss://), as a
managed or external Redis requires: a real redis-server and Sentinel serving TLS with a
throwaway CA made by openssl here, reached through shopipe's own Sentinel client."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from shopipe.config import CommonSettings, load_settings
from shopipe.errors import RedisUnavailable
from shopipe.sentinel import MasterClient, RedisTarget, resolve_master

from tests.chart_scripts_kit import free_port, local_redis

pytestmark = pytest.mark.integration

PASSWORD = "tls-redis-pass-0123456789"
SENTINEL_PASSWORD = "tls-sentinel-pass-0123456789"


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True,
                   timeout=60)  # fmt: skip


def make_ca_and_cert(d: Path, name: str) -> None:
    """``name``.crt/.key signed by ``name``-ca.crt, valid for 127.0.0.1 and localhost."""
    d.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        f"/CN={name} test CA",
        "-keyout",
        f"{name}-ca.key",
        "-out",
        f"{name}-ca.crt",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{name}-ca.crt", "-CAkey",
            f"{name}-ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.ext",
            "-out", f"{name}.crt", cwd=d)  # fmt: skip


@dataclass
class TLSRedis:
    ca: Path
    other_ca: Path  # a CA that signed nothing here
    redis_tls_port: int
    sentinel_tls_port: int


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TLSRedis]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl on PATH")
    certs = tmp_path / "certs"
    make_ca_and_cert(certs, "server")
    make_ca_and_cert(certs, "other")
    tls = [
        f"tls-cert-file {certs / 'server.crt'}",
        f"tls-key-file {certs / 'server.key'}",
        f"tls-ca-cert-file {certs / 'server-ca.crt'}",
        "tls-auth-clients no",  # the server checks passwords, the clients check the server
    ]
    redis_tls, sentinel_tls = free_port(), free_port()
    redis_conf = "\n".join([f"tls-port {redis_tls}", f'requirepass "{PASSWORD}"', *tls]) + "\n"
    with local_redis(tmp_path / "redis", redis_conf, PASSWORD):
        sentinel_conf = "\n".join([
            f"tls-port {sentinel_tls}", "tls-replication yes", *tls,
            f'requirepass "{SENTINEL_PASSWORD}"',
            f"sentinel monitor mymaster 127.0.0.1 {redis_tls} 1",
            f'sentinel auth-pass mymaster "{PASSWORD}"',
        ]) + "\n"  # fmt: skip
        with local_redis(tmp_path / "sentinel", sentinel_conf, SENTINEL_PASSWORD, sentinel=True):
            yield TLSRedis(certs / "server-ca.crt", certs / "other-ca.crt", redis_tls, sentinel_tls)


def target(**env: str) -> RedisTarget:
    base = {
        "SHOPIPE_S3_BUCKET": "bucket",
        "SHOPIPE_S3_ACCESS_KEY": "k",
        "SHOPIPE_S3_SECRET_KEY": "s",
        "SHOPIPE_REDIS_PASSWORD": PASSWORD,
        "SHOPIPE_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "SHOPIPE_REDIS_TIMEOUT_SECONDS": "2",
    }
    return RedisTarget.from_settings(load_settings(CommonSettings, {**base, **env}))


@pytest.mark.asyncio
async def test_through_tls_sentinels_to_a_tls_master(tls_redis: TLSRedis) -> None:
    t = target(
        SHOPIPE_SENTINELS=f"127.0.0.1:{tls_redis.sentinel_tls_port}",
        SHOPIPE_REDIS_TLS="true",
        SHOPIPE_REDIS_TLS_CA_FILE=str(tls_redis.ca),
    )
    assert await resolve_master(t) == ("127.0.0.1", tls_redis.redis_tls_port)
    master = MasterClient(t, service="test", pod="tls")
    try:
        r = await master.get()
        await r.set("tls", "yes")
        assert await r.get("tls") == b"yes"
        # The connection in use is TLS (the plain port is another one): the server says so.
        info = await r.client_info()
        assert str(info["laddr"]).rsplit(":", 1)[1] == str(tls_redis.redis_tls_port)
    finally:
        await master.close()


@pytest.mark.asyncio
async def test_a_rediss_url_is_a_fixed_tls_master(tls_redis: TLSRedis) -> None:
    t = target(
        SHOPIPE_REDIS_URL=f"rediss://127.0.0.1:{tls_redis.redis_tls_port}/0",
        SHOPIPE_REDIS_TLS_CA_FILE=str(tls_redis.ca),
    )
    master = MasterClient(t, service="test", pod="tls-url")
    try:
        assert await (await master.get()).ping()
    finally:
        await master.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["plain", "untrusted"])
async def test_without_tls_or_with_another_ca_nothing_is_trusted(tls_redis, case) -> None:
    env = {"SHOPIPE_SENTINELS": f"127.0.0.1:{tls_redis.sentinel_tls_port}"}
    if case == "untrusted":
        env |= {"SHOPIPE_REDIS_TLS": "true", "SHOPIPE_REDIS_TLS_CA_FILE": str(tls_redis.other_ca)}
    with pytest.raises(RedisUnavailable):
        await resolve_master(target(**env))
