"""An in-process fake of the few Kubernetes API paths the operator uses, for the real client.

Not a Kubernetes: it keeps just enough state (deployment scales, pods, leases, HPAs, events)
to answer like the API server does, records every request for assertions, and can be told to
answer evictions with 404/405/429 to exercise the operator's fallbacks.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str
    agent: str = ""


@dataclass
class FakePod:
    name: str
    labels: dict[str, str]
    ip: str = "127.0.0.1"
    port: int = 9090
    phase: str = "Running"


@dataclass
class State:
    namespace: str = "default"
    replicas: dict[str, int] = field(default_factory=dict)
    pods: dict[str, FakePod] = field(default_factory=dict)
    leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    hpas: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    eviction_status: int = 201  # 201, or 404/405 (no eviction API), 429 (PDB)
    version: int = 0


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.rstrip("=!")) != value.lstrip("="):
            return False
    return True


class FakeKube:
    """Start with ``start()``, stop with ``stop()``; ``api_client()`` makes a real client."""

    def __init__(self, namespace: str = "default") -> None:
        self.state = State(namespace=namespace)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---
    def start(self) -> FakeKube:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = json.loads(raw) if raw else None
                req = Request(
                    self.command,
                    url.path,
                    query,
                    body,
                    self.headers.get("Content-Type", ""),
                    self.headers.get("User-Agent", ""),
                )
                with fake.lock:
                    fake.requests.append(req)
                    code, answer = fake.route(req)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self, agent: str = "") -> Any:
        """A real client for this server; ``agent`` tags its requests (``Request.agent``)."""
        cfg = k8s.Configuration()
        cfg.host = self.url
        api = k8s.ApiClient(cfg)
        if agent:
            api.user_agent = agent
        return api

    def add_pod(self, name: str, port: int, labels: dict[str, str] | None = None) -> None:
        with self.lock:
            self.state.pods[name] = FakePod(
                name, labels or {"app.kubernetes.io/part-of": "shopipe"}, port=port
            )

    # --- assertions ---
    def writes(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method != "GET"]

    def find(self, method: str, pattern: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    # --- routing ---
    def route(self, req: Request) -> tuple[int, Any]:
        ns = self.state.namespace
        p = req.path
        m = re.fullmatch(rf"/apis/apps/v1/namespaces/{ns}/deployments/([^/]+)(/scale)?", p)
        if m:
            return self._deployment(req, m.group(1), bool(m.group(2)))
        if p == f"/api/v1/namespaces/{ns}/pods" and req.method == "GET":
            return 200, self._pod_list(req.query.get("labelSelector", ""))
        m = re.fullmatch(rf"/api/v1/namespaces/{ns}/pods/([^/]+)(/eviction)?", p)
        if m:
            return self._pod_write(req, m.group(1), bool(m.group(2)))
        if p == f"/api/v1/namespaces/{ns}/events" and req.method == "POST":
            self.state.events.append(req.body)
            return 201, req.body
        if p == f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers":
            items = self.state.hpas
            return 200, {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscalerList",
                "metadata": {},
                "items": items,
            }
        m = re.fullmatch(rf"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases(?:/([^/]+))?", p)
        if m:
            return self._lease(req, m.group(1))
        return 404, _status(404, "NotFound", f"no route {req.method} {p}")

    def _scale(self, name: str) -> dict[str, Any]:
        n = self.state.replicas[name]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": self.state.namespace},
            "spec": {"replicas": n},
            "status": {"replicas": n},
        }

    def _deployment(self, req: Request, name: str, scale: bool) -> tuple[int, Any]:
        if name not in self.state.replicas:
            return 404, _status(404, "NotFound", f"deployments.apps {name!r} not found")
        if scale and req.method == "PATCH":
            if "merge-patch" not in req.content_type and "strategic" not in req.content_type:
                return 415, _status(415, "UnsupportedMediaType", req.content_type)
            self.state.replicas[name] = int(req.body["spec"]["replicas"])
            return 200, self._scale(name)
        if req.method != "GET":
            return 405, _status(405, "MethodNotAllowed", req.method)
        if scale:
            return 200, self._scale(name)
        return 200, {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.state.namespace},
            "spec": {
                "replicas": self.state.replicas[name],
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "shopipe"}]},
                },
            },
        }

    def _pod_list(self, selector: str) -> dict[str, Any]:
        items = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod.name,
                    "namespace": self.state.namespace,
                    "labels": pod.labels,
                },
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "shopipe",
                            "ports": [{"name": "http", "containerPort": pod.port}],
                        }
                    ]
                },
                "status": {"phase": pod.phase, "podIP": pod.ip},
            }
            for pod in self.state.pods.values()
            if _matches(pod.labels, selector)
        ]
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _pod_write(self, req: Request, name: str, eviction: bool) -> tuple[int, Any]:
        if name not in self.state.pods:
            return 404, _status(404, "NotFound", f"pods {name!r} not found")
        if eviction and req.method == "POST":
            code = self.state.eviction_status
            if code == 429:
                return 429, _status(429, "TooManyRequests", "would violate the disruption budget")
            if code in (404, 405):
                return code, _status(code, "NotFound", "the server could not find the resource")
            del self.state.pods[name]
            return 201, _status(201, "", "")
        if req.method == "DELETE" and not eviction:
            del self.state.pods[name]
            return 200, _status(200, "", "")
        return 405, _status(405, "MethodNotAllowed", req.method)

    def _lease(self, req: Request, name: str | None) -> tuple[int, Any]:
        leases = self.state.leases
        if name is None and req.method == "POST":
            name = req.body["metadata"]["name"]
            if name in leases:
                return 409, _status(409, "AlreadyExists", f"leases {name!r} already exists")
            return 201, self._store_lease(name, req.body)
        if name is None:
            return 405, _status(405, "MethodNotAllowed", req.method)
        if name not in leases:
            return 404, _status(404, "NotFound", f"leases {name!r} not found")
        if req.method == "GET":
            return 200, leases[name]
        if req.method == "PUT":
            sent = (req.body.get("metadata") or {}).get("resourceVersion")
            if sent != leases[name]["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", "the object has been modified")
            return 200, self._store_lease(name, req.body)
        return 405, _status(405, "MethodNotAllowed", req.method)

    def _store_lease(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.state.version += 1
        obj = json.loads(json.dumps(body))
        obj.setdefault("apiVersion", "coordination.k8s.io/v1")
        obj.setdefault("kind", "Lease")
        obj["metadata"]["namespace"] = self.state.namespace
        obj["metadata"]["resourceVersion"] = str(self.state.version)
        self.state.leases[name] = obj
        return obj  # type: ignore[no-any-return]


class StatusServer:
    """A pod's ``GET /status`` answering ``{"redis_master": master}``; ``master`` may change."""

    def __init__(self, master: str) -> None:
        self.master = master
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                data = json.dumps({"redis_master": srv.master}).encode()
                self.send_response(200 if self.path == "/status" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.port: int = self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
