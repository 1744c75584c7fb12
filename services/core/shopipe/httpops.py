"""The small operational HTTP server of workers and the operator: /metrics /healthz /readyz /status.

It runs inside the service's event loop (uvicorn on a socket bound here, so port 0 works and
the real port is known before serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shopipe import __version__
from shopipe.metrics import render

T = TypeVar("T")
StatusFn = Callable[[], Awaitable[dict[str, Any]]]
ReadyFn = Callable[[], Awaitable[bool]]


def metrics_endpoint(_: Request) -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)


def ops_app(
    service: str,
    status: StatusFn,
    ready: ReadyFn | None = None,
    routes: list[BaseRoute] | None = None,
) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_: Request) -> Response:
        ok = True if ready is None else await ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def status_endpoint(_: Request) -> Response:
        body = {"service": service, "version": __version__}
        body.update(await status())
        return JSONResponse(body)

    base: list[BaseRoute] = [
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/status", status_endpoint),
    ]
    return Starlette(routes=base + list(routes or []))


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a service's loop: the service owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _MainServer(uvicorn.Server):
    """uvicorn as a process's main loop: SIGTERM/SIGINT stop it gracefully and the process
    then exits 0 (uvicorn's own handling re-raises the signal, which Kubernetes and shells
    report as a crash). ``on_started`` runs once its socket listens."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            await self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for open connections
        self.should_exit = True


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the services spend much of their CPU in the event loop and
    its transports (measured: see bench/), and uvloop does that work in C."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_process(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for a service's main coroutine, on the fastest loop available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def run_main(
    app: Any,
    host: str,
    port: int,
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
    **options: Any,
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT; returns the process exit code. ``on_started`` runs
    once the port listens (after the app's lifespan startup)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, **options)
    run_process(_MainServer(config, on_started).serve())
    return 0


class OpsServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], port: int) -> None:
        self._server = server
        self._task = task
        self.port = port

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


async def serve(
    app: Any, host: str, port: int, *, access_log: bool = False, **options: Any
) -> OpsServer:
    """Serve ``app`` in this loop; returns once it accepts connections. ``options`` go to
    ``uvicorn.Config``."""
    sock = bind(host, port)
    options.setdefault("timeout_graceful_shutdown", 2)
    config = uvicorn.Config(app, log_config=None, access_log=access_log, lifespan="off", **options)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http:{port}")
    # Return only once uvicorn listens, so a caller may connect at once (bounded wait).
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started and not task.done():
        if asyncio.get_running_loop().time() > deadline:
            task.cancel()
            raise RuntimeError(f"http server on {host}:{port} did not start")
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises what made uvicorn stop
    return OpsServer(server, task, sock.getsockname()[1])
