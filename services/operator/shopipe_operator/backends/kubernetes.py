"""The Kubernetes backend: the official client, in-cluster or kubeconfig.

Blocking client calls run in a thread. Pods are restarted through the Eviction API only, so
that PodDisruptionBudgets hold (429 means "not now"): the API exists on every supported
Kubernetes version, and a plain delete would pass the budgets by (the operator's Role has no
pods delete). Scaling patches the Deployment's ``scale`` subresource and is
refused when a HorizontalPodAutoscaler already targets the Deployment: two controllers
fighting over one replica count is worse than either.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from shopipe.config import OperatorSettings
from shopipe.errors import ConfigError
from shopipe.logs import get_logger

from shopipe_operator.backends.base import BackendError, BackendUnavailable, Pod

log = get_logger(__name__)
T = TypeVar("T")

STATUS_PORT_ANNOTATION = "shopipe.io/status-port"
STATUS_PORT_NAMES = ("http", "metrics")
COMPONENT = "shopipe-operator"


def load_api_client() -> Any:
    """In-cluster service account first, else the kubeconfig (a developer's machine)."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
        except (k8s_config.ConfigException, OSError) as e:
            raise ConfigError(
                "kubernetes backend: no in-cluster service account, no kubeconfig"
            ) from e
    return k8s.ApiClient()


def status_url(pod: Any) -> str | None:
    """``http://<pod IP>:<port>/status``: the annotated port, else a port named http/metrics."""
    ip = getattr(pod.status, "pod_ip", None) if pod.status else None
    if not ip:
        return None
    port: int | None = None
    annotations = (pod.metadata.annotations or {}) if pod.metadata else {}
    if str(annotations.get(STATUS_PORT_ANNOTATION, "")).isdigit():
        port = int(annotations[STATUS_PORT_ANNOTATION])
    else:
        ports = [p for c in (pod.spec.containers if pod.spec else []) for p in (c.ports or [])]
        named = [p for p in ports if p.name in STATUS_PORT_NAMES]
        chosen = (named or ports or [None])[0]
        port = chosen.container_port if chosen is not None else None
    if port is None:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/status"


class KubernetesBackend:
    name = "kubernetes"
    leader_election = True

    def __init__(self, settings: OperatorSettings, api_client: Any | None = None) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.deployment = settings.worker_deployment
        self.api_client = api_client if api_client is not None else load_api_client()
        self.apps = k8s.AppsV1Api(self.api_client)
        self.core = k8s.CoreV1Api(self.api_client)
        self.autoscaling = k8s.AutoscalingV2Api(self.api_client)
        self.coordination = k8s.CoordinationV1Api(self.api_client)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=10, **kw)
        except ApiException as e:
            status = int(e.status) if e.status is not None else None
            if status is None or status >= 500 or status in (408, 429):
                raise BackendUnavailable(f"kubernetes {what}: HTTP {status}", status) from e
            raise BackendError(f"kubernetes {what}: HTTP {status} {e.reason or ''}", status) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise BackendUnavailable(f"kubernetes {what}: {type(e).__name__}") from e

    async def current_replicas(self) -> int:
        scale = await self._call(
            "read scale",
            self.apps.read_namespaced_deployment_scale,
            self.deployment,
            self.namespace,
        )
        return int(scale.spec.replicas or 0) if scale.spec else 0

    async def scale(self, replicas: int) -> None:
        # Merge patch of the scale subresource: touches spec.replicas and nothing else.
        await self._call(
            "patch scale",
            self.apps.patch_namespaced_deployment_scale,
            self.deployment,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json",
        )

    async def pods(self) -> list[Pod]:
        listing = await self._call(
            "list pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.settings.pod_selector,
        )
        out = []
        for p in listing.items or []:
            if p.metadata is None or not p.metadata.name or p.metadata.deletion_timestamp:
                continue  # already going away
            if p.status is None or p.status.phase != "Running":
                continue
            out.append(Pod(p.metadata.name, status_url(p)))
        return out

    async def restart(self, pod: Pod, reason: str) -> str:
        body = k8s.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=k8s.V1ObjectMeta(name=pod.name, namespace=self.namespace),
        )
        try:
            # The answer is a Status, not an Eviction: do not let the client parse it.
            await self._call(
                "evict",
                self.core.create_namespaced_pod_eviction,
                pod.name,
                self.namespace,
                body,
                _preload_content=False,
            )
            return "evicted"
        except BackendUnavailable as e:
            if e.status == 429:
                return "blocked"  # a PodDisruptionBudget says not now; next reconcile retries
            raise
        except BackendError as e:
            if e.status == 404:
                return "gone"  # it went away on its own since it was listed
            raise

    async def scale_owner(self) -> str | None:
        listing = await self._call(
            "list hpa",
            self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            self.namespace,
        )
        for hpa in listing.items or []:
            ref = hpa.spec.scale_target_ref if hpa.spec else None
            if ref is not None and ref.kind == "Deployment" and ref.name == self.deployment:
                return f"HorizontalPodAutoscaler/{hpa.metadata.name if hpa.metadata else '?'}"
        return None

    async def event(self, reason: str, message: str, pod: str | None = None) -> None:
        now = datetime.datetime.now(datetime.UTC)
        kind, name = ("Pod", pod) if pod else ("Deployment", self.deployment)
        api_version = "v1" if pod else "apps/v1"
        body = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(
                name=f"{name}.{secrets.token_hex(8)}", namespace=self.namespace
            ),
            involved_object=k8s.V1ObjectReference(
                kind=kind, name=name, namespace=self.namespace, api_version=api_version
            ),
            reason=reason,
            message=message,
            type="Warning" if reason in ("StaleMaster", "ScaleRefused") else "Normal",
            source=k8s.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await self._call(
                "create event",
                self.core.create_namespaced_event,
                self.namespace,
                body,
                _preload_content=False,
            )
        except (BackendError, BackendUnavailable) as e:
            # An event is a courtesy; the log line already holds the decision.
            log.warning("cannot record event", extra={"reason": reason, "error": str(e)[:200]})

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)
