"""The load generator: raw asyncio HTTP/1.1 over keep-alive connections, in its own process.

Run as ``python -m bench.loadgen`` with a JSON spec on stdin (the secret stays out of argv);
prints one JSON result on stdout. It runs in a
process of its own so that it never shares an event loop (or a GIL) with the server it measures.
Raw asyncio rather than httpx: a Python HTTP client costs more CPU per request than the servers
under test, and on two cores the generator must stay the cheaper side.

Two modes:
- closed loop (``rate`` 0): ``concurrency`` connections each send the next request as soon as the
  previous answer arrived: throughput and ack latency at that concurrency. The requests are
  built and signed before the clock starts.
- open loop (``rate`` > 0): requests are due at a fixed rate whatever the answers; latency counts
  from the due time, so a slow server cannot hide its queueing (no coordinated omission).

Both stop at ``requests`` or ``seconds``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import uvloop

from bench.payloads import Generator, http_request
from bench.stats import summarise


@dataclass(frozen=True)
class Spec:
    host: str
    port: int
    path: str
    secret: str
    concurrency: int
    requests: int
    seconds: float
    rate: float = 0.0
    seed: int = 7
    timeout: float = 10.0
    # Open loop: connect on first use instead of up front, as a real sender does (a connection
    # left idle since it opened is closed at the receiver's head deadline).
    lazy: bool = False


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, data: bytes) -> tuple[int, bool]:
        """Send one request, read the whole answer: (status, connection still usable)."""
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, keep = -1, False, True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                keep = False
        if length >= 0:
            await self.reader.readexactly(length)
        elif chunked:
            await self._chunks()
        else:
            await self.reader.read()
            keep = False
        return status, keep

    async def _chunks(self) -> None:
        # Bounded by the body the server sends; each turn consumes one chunk.
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return

    def close(self) -> None:
        self.writer.close()


class Run:
    """Counters of one run."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.latencies: list[float] = []
        self.status: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.sent = 0
        # Every request's answer time whatever its status, no answer counting as infinite (the
        # overload phase's "all requests"), and per second of due time: [answered 200, other].
        self.answered: list[float] = []
        # The same from the moment the request was written (its connection open): what the
        # server took, without this generator's own lag behind the due time on a busy machine.
        self.from_send: list[float] = []
        self.timeline: dict[int, list[int]] = {}
        self.t0 = time.perf_counter()

    async def one(self, conn: Conn | None, data: bytes, start: float) -> Conn | None:
        """One request on ``conn`` (opened if None); returns the connection to reuse."""
        spec = self.spec
        self.sent += 1
        try:
            async with asyncio.timeout(spec.timeout):
                if conn is None:
                    conn = await Conn.open(spec.host, spec.port)
                sent_at = time.perf_counter()
                status, keep = await conn.request(data)
        except (OSError, EOFError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            self.errors[type(e).__name__] += 1
            self._answer(start, math.inf, ok=False)
            self.from_send.append(math.inf)
            if conn is not None:
                conn.close()
            return None
        self.status[str(status)] += 1
        self._answer(start, time.perf_counter() - start, ok=status == 200)
        self.from_send.append(time.perf_counter() - sent_at)
        if status == 200:
            self.latencies.append(time.perf_counter() - start)
        if not keep:
            conn.close()
            return None
        return conn

    def _answer(self, start: float, seconds: float, ok: bool) -> None:
        self.answered.append(seconds)
        counts = self.timeline.setdefault(int(start - self.t0), [0, 0])
        counts[0 if ok else 1] += 1

    def result(self, elapsed: float) -> dict[str, Any]:
        ok = self.status.get("200", 0)
        return {
            "concurrency": self.spec.concurrency,
            "rate": self.spec.rate,
            "sent": self.sent,
            "ok": ok,
            "status": dict(self.status),
            "errors": dict(self.errors),
            "elapsed_s": elapsed,
            "rps": ok / elapsed if elapsed > 0 else 0.0,
            "latency": summarise(self.latencies),
            "latency_all": summarise(self.answered),
            "latency_all_from_send": summarise(self.from_send),
            "timeline": [[t, *self.timeline[t]] for t in sorted(self.timeline)],
            # Wall-clock time of the timeline's second 0, to line it up with other events.
            "t0_epoch": time.time() - (time.perf_counter() - self.t0),
        }


async def _open_all(spec: Spec, n: int) -> list[Conn | None]:
    conns = await asyncio.gather(
        *(Conn.open(spec.host, spec.port) for _ in range(n)), return_exceptions=True
    )
    return [c if isinstance(c, Conn) else None for c in conns]


async def closed_loop(spec: Spec) -> dict[str, Any]:
    gen = Generator(spec.secret, seed=spec.seed)
    host = f"{spec.host}:{spec.port}"
    prepared = [http_request(gen.next(), host, spec.path) for _ in range(spec.requests)]
    it: Iterator[bytes] = iter(prepared)
    run = Run(spec)
    conns = await _open_all(spec, spec.concurrency)
    t0 = run.t0 = time.perf_counter()
    deadline = t0 + spec.seconds

    async def client(conn: Conn | None) -> None:
        # Bounded: each turn takes one of the prepared requests, and time is bounded too.
        for data in it:
            conn = await run.one(conn, data, time.perf_counter())
            if time.perf_counter() >= deadline:
                break
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client(c) for c in conns))
    return run.result(time.perf_counter() - t0)


async def open_loop(spec: Spec) -> dict[str, Any]:
    gen = Generator(spec.secret, seed=spec.seed)
    host = f"{spec.host}:{spec.port}"
    run = Run(spec)
    idle: asyncio.Queue[Conn | None] = asyncio.Queue()
    opened = [None] * spec.concurrency if spec.lazy else await _open_all(spec, spec.concurrency)
    for c in opened:
        idle.put_nowait(c)
    tasks: set[asyncio.Task[None]] = set()

    async def send(data: bytes, due: float) -> None:
        conn = await idle.get()
        idle.put_nowait(await run.one(conn, data, due))

    t0 = run.t0 = time.perf_counter()
    deadline = t0 + spec.seconds
    for i in range(spec.requests):
        due = t0 + i / spec.rate
        if due >= deadline:
            break
        data = http_request(gen.next(), host, spec.path)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(data, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=spec.timeout)
    for task in list(tasks):
        task.cancel()
    elapsed = time.perf_counter() - t0
    while not idle.empty():
        c = idle.get_nowait()
        if c is not None:
            c.close()
    return run.result(elapsed)


def run(spec: Spec) -> dict[str, Any]:
    coro = open_loop(spec) if spec.rate > 0 else closed_loop(spec)
    # uvloop: the generator's own CPU and loop lag per request are part of every latency it
    # measures, and it shares two cores with the system under test.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out = runner.run(coro)
    out["spec"] = {k: v for k, v in asdict(spec).items() if k != "secret"}
    return out


def main() -> int:
    spec = Spec(**json.loads(sys.stdin.read()))
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
