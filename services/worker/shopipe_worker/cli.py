"""`shopipe worker`, `shopipe backlog`, `shopipe dlq list|replay`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from shopipe import logs, progress
from shopipe.buffer import Buffer
from shopipe.config import WorkerSettings, load_settings
from shopipe.sentinel import MasterClient, RedisTarget

from shopipe_worker import backlog, dlq
from shopipe_worker.forward import cli as forward_cli
from shopipe_worker.forward.delivery import route_of
from shopipe_worker.processor import redis_deadline


def _settings(quiet: bool = True) -> WorkerSettings:
    # Beside `make dev`, `eval "$(shopipe dev env)"` sets what these commands need.
    s = load_settings(WorkerSettings)
    # One-shot commands print their answer; only problems belong in the log.
    level = "warning" if quiet and s.log_level in ("debug", "info") else s.log_level
    logs.setup("worker", level, s.log_format)
    return s


def run_worker(_: argparse.Namespace) -> int:
    from shopipe.httpops import run_process

    from shopipe_worker.app import Worker  # the service's imports only where it runs

    s = _settings(quiet=False)

    async def main() -> int:
        return await Worker(s).run()

    return run_process(main())


async def _with_clients(s: WorkerSettings, fn: Any) -> Any:
    master = MasterClient(RedisTarget.from_settings(s), service="worker", pod=f"{s.pod_name}-cli")
    store = Buffer(s)
    try:
        return await fn(master, store)
    finally:
        await master.close()
        store.close()


def show_backlog(args: argparse.Namespace) -> int:
    s = _settings()

    async def measure(master: MasterClient, store: Buffer) -> backlog.Backlog:
        return await master.call(
            lambda r: backlog.measure(r, store, s.stream, s.consumer_group, backlog.SCAN_CAP),
            deadline=redis_deadline(s),
        )

    result: backlog.Backlog = asyncio.run(_with_clients(s, measure))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"stream length     {result.stream_length}")
        print(f"lag               {result.lag}")
        print(f"pending           {result.pending}")
        print(f"incoming objects  {result.incoming_objects}")
        print(f"oldest            {result.oldest_seconds:.1f} s")
    return 0


def dlq_list(args: argparse.Namespace) -> int:
    s = _settings()

    async def collect(_m: MasterClient, store: Buffer) -> tuple[list[dlq.DeadLetter], list[str]]:
        dead = _of_route(await dlq.list_dead(store, args.topic), args.route)
        return dead, [] if args.route else await dlq.list_dead_segments(store)

    records, segments = asyncio.run(_with_clients(s, collect))
    for dl in records:
        print(json.dumps(dl.summary(), sort_keys=True))
    for key in segments:
        print(json.dumps({"segment": key, "unparseable": True}))
    print(f"{len(records)} records, {len(segments)} unparseable segments", file=sys.stderr)
    return 0


def _of_route(items: list[dlq.DeadLetter], route: str | None) -> list[dlq.DeadLetter]:
    """The dead letters of forward route ``route`` (all of them when None)."""
    if route is None:
        return items
    return [dl for dl in items if route_of(dl.doc.error) == route]


def dlq_replay(args: argparse.Namespace) -> int:
    if not args.all and args.topic is None and args.route is None and not args.record_ids:
        msg = "shopipe dlq replay: name record ids, or use --topic T, --route R or --all"
        print(msg, file=sys.stderr)
        return 2
    s = _settings()

    async def go(master: MasterClient, store: Buffer) -> dlq.Report | None:
        items = _of_route(await dlq.list_dead(store, args.topic), args.route)
        if args.record_ids:
            wanted = set(args.record_ids)
            items = [dl for dl in items if dl.record_id in wanted]
        if not items:
            return None
        return await dlq.replay(s, master, store, items, progress.bar("replay"), force=args.force)

    report = asyncio.run(_with_clients(s, go))
    if report is None:
        print("nothing to replay", file=sys.stderr)
        return 0
    for rid in report.already_done:
        print(f"already done, skipped: {rid}", file=sys.stderr)
    for rid in report.forced:
        print(f"already done, run again (--force): {rid}", file=sys.stderr)
    print(f"replayed {len(report.replayed) + len(report.forced)} records", file=sys.stderr)
    if report.already_done:
        print(
            f"{len(report.already_done)} records were already done and were not run again; "
            "their dead letters are removed (--force runs a done record's handlers again)",
            file=sys.stderr,
        )
    if report.forced:
        print(
            f"--force: {len(report.forced)} records that were already done ran again",
            file=sys.stderr,
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="Consume the stream and run handlers.")
    p.set_defaults(func=run_worker)

    p = sub.add_parser("backlog", help="Stream length, lag, pending, incoming/ objects.")
    p.add_argument("--json", action="store_true", help="One JSON object.")
    p.set_defaults(func=show_backlog)

    p = sub.add_parser("dlq", help="Dead-lettered records: list, replay.")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    lp = dsub.add_parser("list", help="One JSON line per dead-lettered record.")
    lp.add_argument("--topic", help="Only this topic.")
    lp.add_argument("--route", help="Only records a forward route failed (docs/forwarding.md).")
    lp.set_defaults(func=dlq_list)
    rp = dsub.add_parser("replay", help="Process dead-lettered records again.")
    rp.add_argument("record_ids", nargs="*", help="Record ids to replay.")
    rp.add_argument("--topic", help="Replay every record of this topic.")
    rp.add_argument("--route", help="Replay every record this forward route failed.")
    rp.add_argument("--all", action="store_true", help="Replay every dead-lettered record.")
    rp.add_argument(
        "--force",
        action="store_true",
        help="Also run records that are already done again (their handlers apply twice).",
    )
    rp.set_defaults(func=dlq_replay)

    forward_cli.register(sub, _settings)
