"""Settings of every shopipe service, read from SHOPIPE_* environment variables.

One typed, frozen settings object per service. ``load_*`` validates everything at start and
raises one ConfigError line naming each bad variable (never a secret's value). A SHOPIPE_*
name that no service knows is an error too: a typo must not pass silently. Names known to
another service are accepted, because one ConfigMap often feeds every shopipe pod.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TypeVar

from shopipe.envparse import Secret, describe, load, names, setting
from shopipe.errors import ConfigError
from shopipe.shopify import RETRY_WINDOW_SECONDS

# The shortest done-marker lifetime accepted: Shopify's retry window plus an hour of backlog,
# during which a retry is still processed after the first delivery's marker was written.
MIN_DEDUP_TTL_SECONDS = RETRY_WINDOW_SECONDS + 3600

__all__ = [
    "CommonSettings",
    "OperatorSettings",
    "ReceiverSettings",
    "Secret",
    "SendSettings",
    "WorkerSettings",
    "all_settings",
    "describe",
    "known_names",
    "load_settings",
]


# Shopify waits this long for an answer, then counts the delivery failed and retries later.
SHOPIFY_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    # --- process ---
    pod_name: str = setting(
        socket.gethostname(),
        help="Name of this pod or host; names Redis connections.",
        shown="(host name)",
    )
    log_level: str = setting(
        "info", help="Log level.", choices=("debug", "info", "warning", "error")
    )
    log_format: str = setting("json", help="Log format.", choices=("json", "text"))
    http_host: str = setting("0.0.0.0", help="Address the HTTP server binds.")
    # --- Redis through Sentinel ---
    sentinels: tuple[str, ...] = setting(
        (), help="Sentinel addresses host:port, comma separated. Empty: use SHOPIPE_REDIS_URL."
    )
    sentinel_master: str = setting("mymaster", help="Name of the master the Sentinels monitor.")
    redis_url: str = setting(
        "",
        help="Fixed Redis address redis://host:port/db (rediss:// for TLS), used only when no "
        "Sentinel is set.",
    )
    redis_password: Secret | None = setting(None, help="Password of the Redis master/replicas.")
    sentinel_password: Secret | None = setting(
        None, help="Password of the Sentinels (defaults to none)."
    )
    redis_tls: bool = setting(
        False,
        help="Talk TLS to Redis and the Sentinels (a managed or external Redis); "
        "SHOPIPE_REDIS_URL rediss://... turns it on too. The in-chart Redis speaks plain TCP.",
    )
    redis_tls_ca_file: str = setting(
        "",
        help="PEM file of the CA that signed the Redis and Sentinel certificates (with "
        "SHOPIPE_REDIS_TLS). Empty: the system's CAs.",
    )
    redis_timeout_seconds: float = setting(
        2.0, unit="seconds", minimum=0.05, help="Connect and command timeout for Redis."
    )
    key_prefix: str = setting("shopipe", help="Prefix of every Redis key shopipe writes.")
    stream: str = setting("shopipe:webhooks", help="Redis stream that announces segments.")
    consumer_group: str = setting("shopipe-workers", help="Consumer group of the workers.")
    stream_maxlen: int = setting(
        1_000_000,
        unit="entries",
        minimum=1000,
        help="Approximate cap of the stream; trimmed entries are recovered by the sweeper.",
    )
    # --- S3 object storage (the source of truth) ---
    s3_endpoint: str = setting(
        "", help="S3 endpoint URL, e.g. https://us-east-1.linodeobjects.com. Empty: AWS."
    )
    s3_region: str = setting("us-east-1", help="S3 region name.")
    s3_bucket: str = setting(help="Bucket holding segments (3+ characters).")
    s3_access_key: Secret = setting(help="S3 access key id.")
    s3_secret_key: Secret = setting(help="S3 secret access key.")
    s3_connect_timeout_seconds: float = setting(
        1.0, unit="seconds", minimum=0.05, help="Connect timeout of one S3 call."
    )
    s3_read_timeout_seconds: float = setting(
        2.0, unit="seconds", minimum=0.05, help="Read timeout of one S3 call."
    )
    s3_max_attempts: int = setting(
        2, unit="attempts", minimum=1, help="Attempts per S3 call, first one included."
    )


@dataclasses.dataclass(frozen=True)
class ReceiverSettings(CommonSettings):
    http_port: int = setting(8080, unit="port", minimum=0, help="Receiver HTTP port.")
    ops_port: int | None = setting(
        None,
        unit="port",
        minimum=0,
        help="Port of /metrics, /status, /readyz and /healthz; the webhook port then serves "
        "only webhooks and the two health checks (the chart sets it: the webhook port may be "
        "public). Empty: everything on SHOPIPE_HTTP_PORT.",
    )
    shopify_secrets: tuple[Secret, ...] = setting(
        help="Shopify app client secrets, comma separated; any one verifies (rotation)."
    )
    webhook_path: str = setting("/webhooks/shopify", help="Path Shopify POSTs to.")
    max_body_bytes: int = setting(
        5 * 1024 * 1024, unit="bytes", minimum=1, help="Largest accepted webhook body."
    )
    body_timeout_seconds: float = setting(
        10.0,
        unit="seconds",
        minimum=0.1,
        help="Deadline to receive a whole body (SHOPIPE_ANSWER_DEADLINE_SECONDS cuts it shorter).",
    )
    segment_max_records: int = setting(
        500, unit="records", minimum=1, help="Group commit: most records in one segment."
    )
    segment_max_bytes: int = setting(
        8 * 1024 * 1024, unit="bytes", minimum=1024, help="Group commit: largest segment."
    )
    segment_max_wait_seconds: float = setting(
        0.05, unit="seconds", minimum=0.0, help="Group commit: longest a record waits to be put."
    )
    ready_storage_max_age_seconds: float = setting(
        30.0, unit="seconds", minimum=1, help="/readyz fails if storage has not answered since."
    )
    http_keepalive_seconds: int = setting(
        75,
        unit="seconds",
        minimum=1,
        help="An idle client connection is closed after this. Keep it above the idle timeout of "
        "the proxy in front (ingress-nginx: 60 s), or our close races its reuse: a 502.",
    )
    # --- bounds under overload and against hostile clients (docs/security.md) ---
    answer_deadline_seconds: float = setting(
        4.0,
        unit="seconds",
        minimum=0.1,
        maximum=SHOPIFY_TIMEOUT_SECONDS - 0.5,
        help="Every webhook is answered this long after its head arrived: 200 if its segment is "
        "durable, else 503. Below Shopify's 5 s, with room for the network and the proxy.",
    )
    max_puts_in_flight: int = setting(
        8,
        unit="PUTs",
        minimum=1,
        maximum=64,
        help="Segment PUTs in flight at once; while reached, open segments grow instead.",
    )
    max_body_bytes_in_memory: int = setting(
        64 * 1024 * 1024,
        unit="bytes",
        minimum=1024,
        help="Body bytes held at once (being read, in open segments, in PUTs); beyond, 503 at "
        "once. At least SHOPIPE_MAX_BODY_BYTES.",
    )
    http_max_headers: int = setting(
        100, unit="headers", minimum=10, help="More header lines in a request: 431."
    )
    http_max_header_bytes: int = setting(
        32 * 1024,
        unit="bytes",
        minimum=1024,
        help="Larger request head (request line and header lines): 431.",
    )
    http_head_timeout_seconds: float = setting(
        5.0,
        unit="seconds",
        minimum=0.1,
        help="A request head not complete this long after the connection opened (or the "
        "request's first byte, on a reused connection): the connection is closed.",
    )
    http_max_connections: int = setting(
        1000,
        unit="connections",
        minimum=2,
        help="Open connections per process; a request on one beyond: 503 and close. Keep it "
        "above the proxy's idle keep-alive connections to one receiver.",
    )

    def __post_init__(self) -> None:
        if self.ops_port is not None and self.ops_port == self.http_port != 0:
            raise ConfigError(
                "invalid configuration: SHOPIPE_OPS_PORT must differ from SHOPIPE_HTTP_PORT "
                "(leave it empty to serve both on one port)"
            )
        if self.max_body_bytes_in_memory < self.max_body_bytes:
            raise ConfigError(
                "invalid configuration: SHOPIPE_MAX_BODY_BYTES_IN_MEMORY must be at least "
                "SHOPIPE_MAX_BODY_BYTES (a body of the largest accepted size must fit)"
            )


@dataclasses.dataclass(frozen=True)
class WorkerSettings(CommonSettings):
    http_port: int = setting(9090, unit="port", minimum=0, help="Worker HTTP port (metrics).")
    concurrency: int = setting(
        16, unit="segments", minimum=1, help="Segments in flight at once (each waits on I/O)."
    )
    block_seconds: float = setting(
        1.0, unit="seconds", minimum=0.01, help="XREADGROUP block timeout."
    )
    max_attempts: int = setting(
        8, unit="attempts", minimum=1, help="Attempts per record before dead-lettering."
    )
    retry_base_seconds: float = setting(
        1.0, unit="seconds", minimum=0.0, help="First retry backoff; doubles per attempt."
    )
    retry_max_seconds: float = setting(
        300.0, unit="seconds", minimum=0.0, help="Longest retry backoff."
    )
    claim_idle_seconds: float = setting(
        5.0,
        unit="seconds",
        minimum=0.1,
        help="Reclaim entries idle this long: their consumer stopped heartbeating them (crashed "
        "or paused); live consumers refresh theirs several times within it.",
    )
    consumer_idle_seconds: float = setting(
        3600.0, unit="seconds", minimum=1, help="Remove consumers idle this long with no pending."
    )
    sweep_interval_seconds: float = setting(
        30.0, unit="seconds", minimum=0.1, help="How often the sweeper lists incoming/."
    )
    sweep_page_keys: int = setting(
        1000,
        unit="keys",
        minimum=1,
        help="Keys of incoming/ the sweeper lists and holds at once (one page; S3 sends at most "
        "1000 per LIST call).",
    )
    sweep_grace_seconds: float = setting(
        60.0, unit="seconds", minimum=0.0, help="Segments older than this are re-announced."
    )
    archive: bool = setting(
        False, help="Keep processed segments under processed/ instead of deleting them."
    )
    redis_single_node: bool = setting(
        False,
        help="Redis has no replica (dev, small installs): before removing a segment wait for"
        " the master's own AOF fsync (WAITAOF 1 0, Redis >= 7.2 or Valkey) instead of a"
        " replica (WAIT 1). A lost disk then loses the done-markers.",
    )
    handlers: tuple[str, ...] = setting(
        (), help="Extra handler modules to import, comma separated (package.module)."
    )
    builtin_handlers: tuple[str, ...] = setting(
        ("state", "compliance"), help="Built-in handlers to enable, comma separated."
    )
    dedup_ttl_seconds: int = setting(
        24 * 3600,
        unit="seconds",
        minimum=MIN_DEDUP_TTL_SECONDS,
        help="How long done-markers are kept: at least Shopify's retry window (4 h) plus 1 h. "
        "Each webhook costs about 350 B of Redis for this long (docs/operations.md, sizing).",
    )
    drain_seconds: float = setting(
        20.0, unit="seconds", minimum=0.0, help="On SIGTERM, time to finish in-flight work."
    )
    state_bodies: bool = setting(
        False,
        help="The state handler keeps each resource's body in its copy; off, a copy holds its "
        "version, updated_at and topic only (~200 B instead of the body's KBs).",
    )
    state_ttl_seconds: int = setting(
        24 * 3600,
        unit="seconds",
        minimum=MIN_DEDUP_TTL_SECONDS,
        help="State copies expire this long after their last write; at least Shopify's retry "
        "window plus 1 h, which the version guard against out-of-order deliveries needs.",
    )
    forward_routes_file: str = setting(
        "",
        help="The forward handler's routes (YAML or JSON): topics to HTTP destinations, with "
        "limits and signing (docs/forwarding.md). Needs forward in SHOPIPE_BUILTIN_HANDLERS.",
    )
    forward_shopify_secret: Secret | None = setting(
        None,
        help="The Shopify app's client secret (the first of the receiver's "
        "SHOPIPE_SHOPIFY_SECRETS): forwarded deliveries carry X-Shopify-Hmac-Sha256 computed "
        "with it over the exact body, the very value Shopify sent. Unset: no such header.",
    )

    def __post_init__(self) -> None:
        if self.forward_routes_file and "forward" not in self.builtin_handlers:
            raise ConfigError(
                "invalid configuration: SHOPIPE_FORWARD_ROUTES_FILE is set but forward is not in "
                "SHOPIPE_BUILTIN_HANDLERS"
            )


@dataclasses.dataclass(frozen=True)
class OperatorSettings(CommonSettings):
    http_port: int = setting(9091, unit="port", minimum=0, help="Operator HTTP port.")
    backend: str = setting(
        "kubernetes",
        help="What to act on: a backend of the shopipe.operator_backends entry points "
        "(kubernetes; the dev stack adds local).",
    )
    namespace: str = setting("default", help="Namespace of the shopipe workloads.")
    worker_deployment: str = setting("shopipe-worker", help="Worker Deployment to scale.")
    pod_selector: str = setting(
        "app.kubernetes.io/part-of=shopipe", help="Label selector of pods checked for staleness."
    )
    min_workers: int = setting(1, unit="replicas", minimum=0, help="Fewest worker replicas.")
    max_workers: int = setting(10, unit="replicas", minimum=1, help="Most worker replicas.")
    target_backlog_per_worker: int = setting(
        200, unit="segments", minimum=1, help="Backlog one worker is expected to carry."
    )
    scale_up_max_step: int = setting(
        4, unit="replicas", minimum=1, help="Most replicas added in one decision."
    )
    scale_down_window_seconds: float = setting(
        300.0, unit="seconds", minimum=0.0, help="Scale down only after this long of lower need."
    )
    reconcile_seconds: float = setting(
        5.0, unit="seconds", minimum=0.1, help="Safety-net period of the reconcile loop."
    )
    listing_interval_seconds: float = setting(
        30.0, unit="seconds", minimum=0.0, help="Least time between two listings of incoming/."
    )
    stale_grace_seconds: float = setting(
        15.0, unit="seconds", minimum=0.0, help="A pod on a stale master this long is restarted."
    )
    max_restarts_at_once: int = setting(
        1, unit="pods", minimum=1, help="Most stale pods restarted in one reconcile."
    )
    dry_run: bool = setting(False, help="Decide and log, change nothing.")
    leader_election: bool = setting(True, help="Act only while holding the Lease.")
    lease_name: str = setting("shopipe-operator", help="Name of the coordination Lease.")
    lease_seconds: float = setting(
        15.0, unit="seconds", minimum=1, help="Lease duration; renewed at a third of it."
    )


@dataclasses.dataclass(frozen=True)
class SendSettings:
    """`shopipe send`, a client: where to send and what to sign with, when no flag says."""

    webhook_url: str = setting(
        "",
        help="URL `shopipe send` posts to without --url (`shopipe dev env` sets the dev stack's).",
    )
    shopify_secrets: tuple[Secret, ...] = setting(
        (), help="Shopify app client secrets, comma separated; `shopipe send` signs with the first."
    )


S = TypeVar("S")

_CORE: tuple[type, ...] = (ReceiverSettings, WorkerSettings, OperatorSettings, SendSettings)


@functools.cache
def all_settings() -> tuple[type, ...]:
    """Core's settings classes, then those of installed add-ons (the dev stack's) found in the
    ``shopipe.settings`` entry point group: known where installed, refused where not."""
    found = sorted(entry_points(group="shopipe.settings"), key=lambda e: e.name)
    return _CORE + tuple(ep.load() for ep in found)


def known_names() -> set[str]:
    out: set[str] = set()
    for cls in all_settings():
        out |= names(cls)
    return out


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Read and validate ``cls`` from the environment; raises ConfigError."""
    return load(cls, os.environ if environ is None else environ, known_names())


def describe_all() -> dict[str, list[dict[str, str]]]:
    return {cls.__name__: describe(cls) for cls in all_settings()}
