"""A TCP proxy on loopback that makes a server slow or stalls it (fault injection for S3).

Put in front of SeaweedFS, it forwards bytes unchanged (so S3 signatures still verify) and:
- ``delay`` seconds: holds each request for that long before passing it on. A request is the
  first bytes a client sends after the server last answered on that connection (HTTP/1.1
  without pipelining, as boto3 speaks it);
- ``stalled``: accepts connections and forwards nothing either way, like a server paused with
  SIGSTOP, until the stall is lifted; then everything held flows again.

In a test it runs in the test's event loop (``SlowProxy``); the bench runs it as a process,
``python -m shopipe_devstack.slowproxy PORT_FILE TARGET_HOST TARGET_PORT CONTROL_FILE``, whose
control file holds ``<delay seconds>`` or ``stall`` and is read every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

_CHUNK = 65536


class SlowProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self, delay: float = 0.0) -> None:
        """Lift a stall; requests from now on wait ``delay`` seconds."""
        self.delay = delay
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> SlowProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # asyncio runs each connection in a task of its own
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)
        await self._connection(reader, writer)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answered: list[bool],
        upstream: bool,
    ) -> None:
        # Bounded by the connection: each turn forwards one read, EOF ends it.
        while data := await reader.read(_CHUNK):
            await self._flowing.wait()
            if upstream:
                if answered[0] and self.delay > 0:
                    await asyncio.sleep(self.delay)
                    await self._flowing.wait()
                answered[0] = False
            else:
                answered[0] = True
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        answered = [True]  # the next client bytes start a request
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, answered, upstream=True),
                self._pipe(server_r, client_w, answered, upstream=False),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (client_w, server_w):
                w.close()


def _publish(port_file: Path, port: int) -> None:
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)  # readers never see a half-written port


def _mode(control: Path) -> str:
    """The control file's word (a tiny local file: read in the loop, on purpose)."""
    try:
        return control.read_text().strip() or "0"
    except OSError:
        return "0"


async def _main(port_file: Path, host: str, port: int, control: Path) -> None:
    proxy = SlowProxy(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with proxy:
        _publish(port_file, proxy.port)
        while not stop.is_set():
            text = _mode(control)
            if text == "stall":
                proxy.stall()
            else:
                with contextlib.suppress(ValueError):
                    proxy.resume(float(text))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) != 4:
        sys.exit("usage: python -m shopipe_devstack.slowproxy PORT_FILE HOST PORT CONTROL_FILE")
    asyncio.run(_main(Path(args[0]), args[1], int(args[2]), Path(args[3])))
