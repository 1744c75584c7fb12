"""`shopipe dev [up|down|status|env]`: the local stack in the foreground, and its controls."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from shopipe.address import fmt
from shopipe.config import ReceiverSettings, load_settings
from shopipe.errors import ConfigError

from shopipe_devstack import prometheus
from shopipe_devstack.info import StackInfo
from shopipe_devstack.pids import exe_of, stat_of
from shopipe_devstack.procs import ProcessTable
from shopipe_devstack.records import ProcRecord, is_ours
from shopipe_devstack.seaweed import WeedPorts
from shopipe_devstack.sentinels import agreed_master
from shopipe_devstack.services import (
    Service,
    available_kinds,
    services,
    spawn_service,
    wait_healthy,
)
from shopipe_devstack.settings import DevSettings
from shopipe_devstack.stack import Ports, Stack
from shopipe_devstack.state import StackError, tail

OWNER_FILE = "dev.json"  # the `shopipe dev up` process owning the state dir


def _ports(text: str, n: int, flag: str) -> tuple[int, ...]:
    if not text:
        return (0,) * n
    parts = [p.strip() for p in text.split(",")] if text else []
    if len(parts) != n or not all(p.isdigit() for p in parts):
        raise ConfigError(f"{flag}: expected {n} comma-separated ports")
    return tuple(int(p) for p in parts)


def _add_up_flags(p: argparse.ArgumentParser, sub: bool) -> None:
    # In the `up` subparser defaults are suppressed so they do not undo flags given to `dev`.
    d: Any = argparse.SUPPRESS if sub else None

    def arg(*names: str, default: Any = None, **kw: Any) -> None:
        p.add_argument(*names, default=d if sub else default, **kw)

    arg("--workers", type=int, default=1, help="worker processes to run (default 1)")
    arg("--show-secrets", action="store_true", default=False, help="print secret values too")
    arg("--sentinel-down-after-ms", type=int, default=5000, help="Sentinel down-after (ms)")
    arg("--failover-timeout-ms", type=int, default=10000, help="Sentinel failover-timeout (ms)")
    arg("--master-name", default="mymaster", help="name the Sentinels monitor")
    arg("--redis-ports", default="", help="master,replica,replica ports (default: free ones)")
    arg("--sentinel-ports", default="", help="three Sentinel ports (default: free ones)")
    arg("--s3-port", type=int, default=0, help="S3 gateway port (default: a free one)")
    arg("--receiver-port", type=int, default=0, help="receiver port (default: a free one)")
    arg("--no-services", action="store_true", default=False, help="infrastructure only")
    arg("--fresh", action="store_true", default=False, help="wipe Redis, Sentinel, S3 data")
    arg(
        "--no-supervise",
        action="store_true",
        default=False,
        help="leave a process that dies dead (default: restart it with backoff, as the kubelet)",
    )


def _add_common(p: argparse.ArgumentParser, sub: bool) -> None:
    p.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS if sub else None,
        help="state, logs and secrets (default $SHOPIPE_STATE_DIR or .shopipe)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = subparsers.add_parser("dev", help="run the whole pipeline locally (default: up)")
    _add_common(dev, False)
    _add_up_flags(dev, False)
    dev.set_defaults(func=cmd_up)
    sub = dev.add_subparsers(dest="dev_command", metavar="{up,down,status,env}")
    up = sub.add_parser("up", help="start everything in the foreground; Ctrl-C stops it")
    _add_common(up, True)
    _add_up_flags(up, True)
    up.set_defaults(func=cmd_up)
    for name, func, text in (
        ("down", cmd_down, "stop every process of the stack (also after a crash)"),
        ("status", cmd_status, "show the processes, the master and the endpoints"),
        ("env", cmd_env, "print `export SHOPIPE_...` lines for this stack (secrets included)"),
    ):
        p = sub.add_parser(name, help=text)
        _add_common(p, True)
        p.set_defaults(func=func)


def _state_dir(args: argparse.Namespace) -> Path:
    settings = load_settings(DevSettings)  # also refuses unknown SHOPIPE_* names
    return Path(args.state_dir or settings.state_dir).resolve()


# --- the owner record: one `shopipe dev up` per state dir ---


def _owner(state_dir: Path) -> ProcRecord | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        rec = ProcRecord.from_json((state_dir / OWNER_FILE).read_text())
        if is_ours(rec):
            return rec
    return None


def _claim(state_dir: Path) -> None:
    st = stat_of(os.getpid())
    rec = ProcRecord(
        name="dev",
        pid=os.getpid(),
        starttime=st[1] if st else -1,
        argv=(sys.argv[0] or "shopipe",),
        log="",
        seq=time.monotonic_ns(),
        exe=exe_of(os.getpid()),
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / OWNER_FILE).write_text(rec.to_json())


# --- commands ---


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    owner = _owner(state_dir)
    if owner is not None:
        print(
            f"shopipe dev: already running in {state_dir} (pid {owner.pid}); "
            f"stop it with `shopipe dev down --state-dir {state_dir}`",
            file=sys.stderr,
        )
        return 1
    _claim(state_dir)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            return
        stop.set()
        raise KeyboardInterrupt  # also interrupts a start in progress

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = Stack(
        state_dir,
        sentinel_down_after_ms=args.sentinel_down_after_ms,
        failover_timeout_ms=args.failover_timeout_ms,
        master_name=args.master_name,
        bind=load_settings(DevSettings).dev_bind,
        ports=Ports(
            redis=_ports(args.redis_ports, 3, "--redis-ports"),  # type: ignore[arg-type]
            sentinels=_ports(args.sentinel_ports, 3, "--sentinel-ports"),  # type: ignore[arg-type]
            s3=args.s3_port,
        ),
        fresh=args.fresh,
        supervise=not args.no_supervise,
    )
    prometheus.add(stack)  # scrapes every process, loads the chart's alerts; needs the binary
    print(f"shopipe dev: starting the stack in {state_dir} ...", flush=True)
    code = 0
    try:
        t0 = time.monotonic()
        stack.start()
        started = [] if args.no_services else _start_services(stack, args)
        _print_summary(stack, started, args.show_secrets, time.monotonic() - t0)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    except StackError as e:
        _report(e)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nshopipe dev: stopping ...", flush=True)
        stack.stop()
        (state_dir / OWNER_FILE).unlink(missing_ok=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print("shopipe dev: stopped", flush=True)
    return code


def _start_services(stack: Stack, args: argparse.Namespace) -> list[Service]:
    info = stack.info
    kinds = available_kinds()
    plan: list[tuple[str, str, int]] = []
    if "receiver" in kinds:
        plan.append(("receiver", "receiver", args.receiver_port))
    if "worker" in kinds:
        plan += [("worker", f"worker-{i}", 0) for i in range(args.workers)]
    if "operator" in kinds:
        plan.append(("operator", "operator", 0))
    started = [spawn_service(stack.table, info, k, n, port=p) for k, n, p in plan]
    for svc in started:
        wait_healthy(stack.table, svc, info.bind)
    return started


def _report(e: StackError) -> None:
    print(f"shopipe dev: {e}", file=sys.stderr)
    text = str(e)
    if "; log: " in text:
        log = Path(text.rsplit("; log: ", 1)[1])
        print(f"--- last lines of {log} ---\n{tail(log)}", file=sys.stderr)


def _print_summary(
    stack: Stack, started: list[Service], show_secrets: bool, elapsed: float
) -> None:
    info = stack.info
    path = str(ReceiverSettings.__dataclass_fields__["webhook_path"].default)
    receiver = next((s for s in started if s.kind == "receiver"), None)

    def secret(name: str, value: str) -> str:
        where = info.secrets_dir / name
        return f"{where} = {value}" if show_secrets else f"{where}"

    lines = [
        f"shopipe dev: ready in {elapsed:.1f} s (infrastructure {stack.timings['total']:.1f} s,"
        f" state dir {info.state_dir})",
        "  webhook URL     "
        + (receiver.url(info.bind, path) if receiver else "(no receiver command yet)"),
        f"  Shopify secret  {secret('shopify_secret', info.shopify_secret)}",
        f"  Sentinels       {', '.join(fmt(a) for a in info.sentinels)}"
        f"  (master {info.master_name!r} at {fmt(stack.current_master())})",
        f"  Redis password  {secret('redis_password', info.redis_password)}",
        f"  S3              {info.s3_endpoint}  bucket {info.s3_bucket}",
        f"  S3 keys         {secret('s3_secret_key', info.s3_secret_key)}"
        + (f" (access key {info.s3_access_key})" if show_secrets else ""),
    ]
    lines += [f"  {s.name:<15} {s.url(info.bind)}  pid {s.pid}" for s in started]
    b = stack.supervisor.backoff if stack.supervisor else None
    lines += [
        "  supervision     "
        + (
            f"restarts what dies after {b.initial:g} s doubling to {b.cap:g} s"
            " (restarts in `shopipe dev status`)"
            if b
            else "off: what dies stays dead"
        ),
        prometheus.summary_line(stack),
        f"  logs            {info.log_dir}",
        f'  shell env       eval "$(shopipe dev env --state-dir {info.state_dir})"',
        f"  stop            Ctrl-C here, or `shopipe dev down --state-dir {info.state_dir}`",
    ]
    print("\n".join(lines), flush=True)


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    if not (state_dir / "procs").is_dir():
        print(f"shopipe dev: no stack in {state_dir}, nothing to stop")
        return 0
    owner = _owner(state_dir)
    if owner is not None:
        os.kill(owner.pid, signal.SIGTERM)  # it stops its stack in order
        deadline = time.monotonic() + 60
        while is_ours(owner) and time.monotonic() < deadline:
            time.sleep(0.05)
    table = ProcessTable(state_dir)
    left = [r.name for r in table.records()]
    # Whatever is left (the owner crashed or timed out): stop it here, newest first.
    table.stop_all(timeout=1.0)
    _remove_weed_sockets(state_dir)
    (state_dir / OWNER_FILE).unlink(missing_ok=True)
    print(f"shopipe dev: stopped{' ' + ', '.join(left) if left else ''} in {state_dir}")
    return 0


def _remove_weed_sockets(state_dir: Path) -> None:
    with contextlib.suppress(StackError, OSError, ValueError, KeyError):
        ports: WeedPorts = StackInfo.load(state_dir).weed_ports
        for sock in ports.sockets():
            sock.unlink(missing_ok=True)


def _load(state_dir: Path) -> StackInfo | None:
    try:
        return StackInfo.load(state_dir)
    except StackError as e:
        print(f"shopipe dev: {e}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    info = _load(state_dir)
    if info is None:
        return 1
    table = ProcessTable(state_dir)
    owner = _owner(state_dir)
    print(f"state dir {state_dir}: " + (f"up (pid {owner.pid})" if owner else "no owner"))
    ok = True
    for rec in table.records():
        alive = table.alive(rec.name)
        ok = ok and alive
        print(f"  {rec.name:<12} {'running' if alive else 'DEAD':<8} {_proc_details(rec, alive)}")
    master = agreed_master(list(info.sentinels), info.master_name)
    print(f"  master        {fmt(master) if master else 'unknown'} ({info.master_name})")
    print(f"  sentinels     {', '.join(fmt(a) for a in info.sentinels)}")
    print(f"  s3            {info.s3_endpoint} bucket {info.s3_bucket}")
    print(f"  logs          {info.log_dir}")
    return 0 if ok and table.records() else 1


def _proc_details(rec: ProcRecord, alive: bool) -> str:
    """pid, port, and what the supervisor did: restarts, how the last run ended, when the
    next restart is due."""
    out = f"pid {rec.pid}" + (f" port {rec.meta['port']}" if "port" in rec.meta else "")
    if rec.restarts or rec.last_exit:
        out += f"  restarts {rec.restarts}, last exit {rec.last_exit or 'unknown'}"
    if not alive and rec.restart_at:
        out += f", restart in {max(0.0, rec.restart_at - time.time()):.0f} s"
    return out


def cmd_env(args: argparse.Namespace) -> int:
    info = _load(_state_dir(args))
    if info is None:
        return 1
    env = info.receiver_env()
    path = str(ReceiverSettings.__dataclass_fields__["webhook_path"].default)
    receiver = next(
        (s for s in services(ProcessTable(info.state_dir)) if s.kind == "receiver"), None
    )
    if receiver is not None:  # for `shopipe send`
        env["SHOPIPE_WEBHOOK_URL"] = receiver.url(info.bind, path)
    for k, v in sorted(env.items()):
        print(f"export {k}={shlex.quote(v)}")
    return 0
