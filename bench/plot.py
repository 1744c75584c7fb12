"""results.png: throughput, ack p99 and PUTs per webhook against concurrency, drain progress,
the end-to-end latency CDF and RSS during the soak (matplotlib, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # a phase left out draws nothing to label
        ax.legend(fontsize=8)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    base = results.get("baselines", {})
    ingest = results.get("ingest", {}).get("levels", [])
    series = [
        ("shopipe receiver", ingest),
        ("HTTP ceiling (bare)", base.get("bare", [])),
        ("storage ceiling (PUT/webhook)", base.get("storage", [])),
        ("naive design", base.get("naive", [])),
    ]
    ax = axes[0][0]
    for label, rows in series:
        if rows:
            ax.plot([r["concurrency"] for r in rows], [r["rps"] for r in rows], "o-", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="connections",
        ylabel="webhooks/s (200s)",
        title="Throughput",
    )
    _legend(ax)
    ax = axes[0][1]
    for label, rows in series:
        if rows:
            ys = [r["latency"]["p99_ms"] for r in rows]
            ax.plot([r["concurrency"] for r in rows], ys, "o-", label=label)
    ax.axhline(100, color="grey", linestyle=":", label="target 100 ms")
    ax.set(xscale="log", yscale="log", xlabel="connections", ylabel="ms", title="Ack p99")
    _legend(ax)
    ax = axes[0][2]
    if ingest:
        ax.plot([r["concurrency"] for r in ingest], [r["puts_per_webhook"] for r in ingest], "o-")
    ax.axhline(0.05, color="grey", linestyle=":", label="target 0.05")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="connections",
        ylabel="segment PUTs per webhook",
        title="Group commit",
    )
    _legend(ax)
    ax = axes[1][0]
    drain = results.get("drain")
    if drain:
        ax.plot([t for t, _ in drain["progress"]], [n for _, n in drain["progress"]])
        ax.axhline(drain["webhooks"], color="grey", linestyle=":", label="backlog")
        _legend(ax)
    ax.set(xlabel="seconds", ylabel="webhooks processed", title="Drain, one worker")
    e2e = results.get("e2e")
    ax = axes[1][1]
    if e2e and e2e.get("end_to_end_curve"):
        pts = e2e["end_to_end_curve"]
        ax.plot([v * 1000 for _, v in pts], [q for q, _ in pts])
        ax.axvline(250, color="grey", linestyle=":", label="target p99 250 ms")
        _legend(ax)
    ax.set(xscale="log", xlabel="ms", ylabel="percentile", title="Receipt → handler done (handled)")
    ax = axes[1][2]
    if e2e:
        for proc, mem in e2e["memory"].items():
            ax.plot([t for t, _ in mem["samples"]], [r for _, r in mem["samples"]], label=proc)
        _legend(ax)
    ax.set(xlabel="seconds", ylabel="RSS MB", title="Memory during the soak")
    fig.suptitle(f"shopipe on {results.get('meta', {}).get('machine', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
