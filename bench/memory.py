"""Memory: peak RSS of the receiver and the worker under load, and RSS over a soak.

RSS comes from /proc/<pid>/status (VmRSS now, VmHWM the peak; Threads beside it). A sampler
thread reads every process once a second while the end-to-end load runs;
``bench.stats.rss_growth`` then compares the start of the soak (after a warm-up fifth) with its
end. Reading /proc costs microseconds, so the sampler does not disturb what it measures.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.harness import Server, proc_status, rss
from bench.stats import rss_growth


class Sampler:
    """Samples (seconds since start, RSS bytes) of some servers until stopped."""

    def __init__(self, servers: dict[str, Server], interval: float = 1.0) -> None:
        self.servers = servers
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {k: [] for k in servers}
        # Thread counts, first and last sample: a pool that grows to its size late (each new
        # thread brings a stack and a malloc arena) shows as RSS growth that then stops.
        self.threads: dict[str, list[int]] = {k: [] for k in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        # Bounded by stop(): the event ends the loop within one interval.
        while not self._stop.is_set():
            now = time.monotonic() - self._t0
            for name, server in self.servers.items():
                status = proc_status(server.pid)  # one read for RSS and threads
                cur, _peak = rss(server.pid, status)
                if cur:
                    self.samples[name].append((now, float(cur)))
                    self.threads[name].append(status.get("Threads", 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, server in self.servers.items():
            samples = self.samples[name]
            out[name] = {
                "peak_rss_mb": server.rss()[1] / 2**20,
                "samples": [(round(t, 2), round(r / 2**20, 2)) for t, r in samples],
                "threads": [self.threads[name][0], self.threads[name][-1]] if samples else [],
                **rss_growth(samples),
            }
        return out
