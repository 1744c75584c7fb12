"""``python -m tests.drills.table .shopipe/drills.jsonl``: the figures of a `make drills` run as
the Markdown table of docs/reliability.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEAD = (
    "| drill | sent | lost | doubled | reruns | unavailable r0 / r1 (s) | recovery (s) "
    "| slowest (s) | non-200 | operator restarts |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def row(doc: dict[str, object]) -> str:
    un = doc["unavailable"]
    assert isinstance(un, dict)
    statuses = doc["statuses"]
    assert isinstance(statuses, dict)
    non200 = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()) if str(k) != "200")
    restarts = doc["restarts"]
    assert isinstance(restarts, list)
    ops = ", ".join(f"{r['pod']} ({r['reason']})" for r in restarts) or "none"
    rec = doc["recovery"]
    recovery = "-" if rec is None else f"{float(str(rec)):.1f}"
    return (
        f"| {doc['drill']} | {doc['sent']} | {doc['lost']} | {doc['doubled']} | {doc['reruns']} "
        f"| {un['receiver-0']:.1f} / {un['receiver-1']:.1f} | {recovery} "
        f"| {float(str(doc['slowest'])):.1f} | {non200 or 'none'} | {ops} |"
    )


def main(path: str) -> None:
    print(HEAD)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            print(row(json.loads(line)))


if __name__ == "__main__":
    main(sys.argv[1])
