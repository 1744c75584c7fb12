"""What a running stack offers, readable by any process that knows the state dir.

``stack.json`` holds addresses and names; secrets stay in ``secrets/`` (0600) and are read from
there, so the summary file can be shown or copied without leaking anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from shopipe.address import Address, fmt

from shopipe_devstack.seaweed import REGION, WeedPorts
from shopipe_devstack.state import StackError, read_or_create_secret, secret_file

INFO_FILE = "stack.json"


@dataclasses.dataclass(frozen=True)
class StackInfo:
    state_dir: Path
    master_name: str
    redis_nodes: tuple[Address, ...]  # as started: (master, replica, replica)
    sentinels: tuple[Address, ...]
    s3_endpoint: str
    s3_bucket: str
    bind: str
    weed_ports: WeedPorts
    sentinel_down_after_ms: int
    failover_timeout_ms: int
    s3_region: str = REGION
    # Secrets: never in repr, never in stack.json.
    redis_password: str = dataclasses.field(default="", repr=False)
    s3_access_key: str = dataclasses.field(default="", repr=False)
    s3_secret_key: str = dataclasses.field(default="", repr=False)
    shopify_secret: str = dataclasses.field(default="", repr=False)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def shopify_secret_file(self) -> Path:
        return secret_file(self.state_dir, "shopify_secret")

    @property
    def secrets_dir(self) -> Path:
        return secret_file(self.state_dir, "x").parent

    def service_env(self) -> dict[str, str]:
        """SHOPIPE_* variables a pipeline process needs to use this stack (names as in
        shopipe.config; the receiver also needs SHOPIPE_SHOPIFY_SECRETS, see receiver_env)."""
        return {
            "SHOPIPE_SENTINELS": ",".join(fmt(a) for a in self.sentinels),
            "SHOPIPE_SENTINEL_MASTER": self.master_name,
            "SHOPIPE_REDIS_PASSWORD": self.redis_password,
            "SHOPIPE_S3_ENDPOINT": self.s3_endpoint,
            "SHOPIPE_S3_REGION": self.s3_region,
            "SHOPIPE_S3_BUCKET": self.s3_bucket,
            "SHOPIPE_S3_ACCESS_KEY": self.s3_access_key,
            "SHOPIPE_S3_SECRET_KEY": self.s3_secret_key,
            "SHOPIPE_STATE_DIR": str(self.state_dir),
            "SHOPIPE_HTTP_HOST": self.bind,
        }

    def receiver_env(self) -> dict[str, str]:
        return {**self.service_env(), "SHOPIPE_SHOPIFY_SECRETS": self.shopify_secret}

    def save(self) -> None:
        doc: dict[str, Any] = {
            "master_name": self.master_name,
            "redis_nodes": [list(a) for a in self.redis_nodes],
            "sentinels": [list(a) for a in self.sentinels],
            "s3_endpoint": self.s3_endpoint,
            "s3_bucket": self.s3_bucket,
            "s3_region": self.s3_region,
            "bind": self.bind,
            "weed_ports": dataclasses.asdict(self.weed_ports),
            "sentinel_down_after_ms": self.sentinel_down_after_ms,
            "failover_timeout_ms": self.failover_timeout_ms,
        }
        path = self.state_dir / INFO_FILE
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, state_dir: Path) -> StackInfo:
        """The info of the stack last started in ``state_dir`` (it may be down now)."""
        state_dir = Path(state_dir).resolve()
        try:
            doc = json.loads((state_dir / INFO_FILE).read_text())
        except FileNotFoundError as e:
            raise StackError(f"no dev stack in {state_dir}: run `shopipe dev` first") from e
        return cls(
            state_dir=state_dir,
            master_name=doc["master_name"],
            redis_nodes=tuple((h, int(p)) for h, p in doc["redis_nodes"]),
            sentinels=tuple((h, int(p)) for h, p in doc["sentinels"]),
            s3_endpoint=doc["s3_endpoint"],
            s3_bucket=doc["s3_bucket"],
            s3_region=doc.get("s3_region", REGION),
            bind=doc["bind"],
            weed_ports=WeedPorts(**doc["weed_ports"]),
            sentinel_down_after_ms=int(doc["sentinel_down_after_ms"]),
            failover_timeout_ms=int(doc["failover_timeout_ms"]),
            **load_secrets(state_dir),
        )


def load_secrets(state_dir: Path) -> dict[str, str]:
    """The stack's secrets, generated on first use and kept in ``secrets/`` (0600)."""
    return {
        "redis_password": read_or_create_secret(state_dir, "redis_password"),
        "s3_access_key": "shopipe" + read_or_create_secret(state_dir, "s3_access_key", 6),
        "s3_secret_key": read_or_create_secret(state_dir, "s3_secret_key"),
        "shopify_secret": read_or_create_secret(state_dir, "shopify_secret", 16),
    }
