"""Finding and keeping the Redis master through Sentinel.

redis-py's Sentinel pool can reconnect to a cached, stale master address (an open upstream
issue), so shopipe resolves the master itself: ask the Sentinels, confirm with ROLE, and resolve
again after every connection error or when the Sentinels name another master.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shopipe.address import Address, fmt, parse_address
from shopipe.backoff import Backoff
from shopipe.config import CommonSettings
from shopipe.errors import ConfigError, RedisUnavailable
from shopipe.logs import get_logger
from shopipe.metrics import count_reconnect, set_master

log = get_logger(__name__)
T = TypeVar("T")

# Errors after which the master may have moved: resolve again and retry. By class, because
# redis-py strips the code from the message (``ReadOnlyError("You can't write against a read
# only replica.")``). BusyLoadingError (LOADING) is a ConnectionError; MasterDownError
# (MASTERDOWN) a ResponseError.
RETRYABLE = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.MasterDownError,
    RedisUnavailable,
    OSError,
)
# Replies redis-py has no class for (it keeps their code in the message): NOREPLICAS, a master
# refusing writes under min-replicas-to-write, e.g. one just promoted or just demoted.
_CODES = ("NOREPLICAS", "MASTERDOWN", "READONLY", "LOADING")
# How redis-py prefixes an error inside a pipeline (the command comes first, then the reply).
_IN_PIPELINE = "of pipeline caused error: "


# Every process names its master connection so (CLIENT SETNAME): the operator finds a pod's
# connections left on a demoted master by this name (shopipe_operator.stale).
CONNECTION_PREFIX = "shopipe"


def connection_name(role: str, pod: str) -> str:
    """``shopipe:<role>:<pod>``, e.g. ``shopipe:worker:shopipe-worker-7d9-x2k``."""
    return f"{CONNECTION_PREFIX}:{role}:{pod}"


def parse_connection_name(name: str) -> tuple[str, str] | None:
    """``shopipe:<role>:<pod>`` -> (role, pod); None for a name shopipe did not give."""
    prefix, _, rest = name.partition(":")
    role, _, pod = rest.partition(":")
    if prefix != CONNECTION_PREFIX or not role or not pod:
        return None
    return role, pod


def master_lost(e: BaseException) -> bool:
    """True when ``e`` says the connection reaches no usable master (cut, demoted, loading,
    refusing writes for want of replicas), so the master must be resolved again; False for an
    error of the command itself (wrong type, a handler's bad arguments).

    A transaction a demoted master refused ends in EXECABORT: redis-py then raises the first
    queued command's error (READONLY) from the ExecAbortError, so the class decides here too.
    """
    if isinstance(e, RETRYABLE):
        return True
    if isinstance(e, rex.ExecAbortError):
        return e.__context__ is not None and master_lost(e.__context__)
    if isinstance(e, rex.ResponseError):
        reply = str(e).rpartition(_IN_PIPELINE)[2].lstrip("('\"")
        return reply.startswith(_CODES)
    return False


@dataclass(frozen=True)
class RedisTarget:
    sentinels: tuple[Address, ...]
    master_name: str
    password: str | None
    sentinel_password: str | None
    fixed: Address | None
    timeout: float
    db: int = 0
    tls: bool = False
    tls_ca_file: str = ""  # empty: the system's CAs

    @classmethod
    def from_settings(cls, s: CommonSettings) -> RedisTarget:
        fixed: Address | None = None
        db = 0
        if not s.sentinels:
            if not s.redis_url:
                raise ConfigError("set SHOPIPE_SENTINELS (host:port,...) or SHOPIPE_REDIS_URL")
            url = urlparse(s.redis_url)
            if url.scheme not in ("redis", "rediss") or not url.hostname:
                raise ConfigError("SHOPIPE_REDIS_URL: expected redis://host:port/db or rediss://")
            fixed = (url.hostname, url.port or 6379)
            db = int(url.path.strip("/") or 0)
        return cls(
            sentinels=tuple(parse_address(a) for a in s.sentinels),
            master_name=s.sentinel_master,
            password=s.redis_password.get() if s.redis_password else None,
            sentinel_password=s.sentinel_password.get() if s.sentinel_password else None,
            fixed=fixed,
            timeout=s.redis_timeout_seconds,
            db=db,
            tls=s.redis_tls or s.redis_url.startswith("rediss://"),
            tls_ca_file=s.redis_tls_ca_file,
        )

    def tls_options(self) -> dict[str, Any]:
        """redis-py's connection arguments for TLS (certificate and host name checked); none
        without TLS."""
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_ca_certs": self.tls_ca_file or None, "ssl_cert_reqs": "required"}


def client(addr: Address, password: str | None, timeout: float, **kw: object) -> Redis:
    """A redis.asyncio client for one address with no library retries: a dead address must
    fail within ``timeout`` so the caller can resolve again (redis-py retries 10 times)."""
    return Redis(
        host=addr[0],
        port=addr[1],
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        **kw,  # type: ignore[arg-type]
    )


async def ask_once(
    addr: Address,
    password: str | None,
    wait: float,
    fn: Callable[[Redis], Awaitable[T]],
    **tls: Any,
) -> T | None:
    """``fn`` on a connection of its own to ``addr``, closed after: one question to one Sentinel
    or Redis server. None when it did not answer within ``wait`` s (down, cut off, refusing).
    ``tls``: the target's TLS options (RedisTarget.tls_options), if any."""
    r = client(addr, password, wait, decode_responses=True, **tls)
    try:
        return await fn(r)
    except (rex.RedisError, OSError):
        return None
    finally:
        await r.aclose()


async def _ask_one(target: RedisTarget, sentinel: Address) -> Address | None:
    async def ask(r: Redis) -> Address | None:
        got = await r.sentinel_get_master_addr_by_name(target.master_name)
        return (str(got[0]), int(got[1])) if isinstance(got, tuple) else None

    tls = target.tls_options()
    return await ask_once(sentinel, target.sentinel_password, target.timeout, ask, **tls)


def majority(answers: Mapping[Address, Address | None], configured: int) -> Address | None:
    """The address named by more than half of ``configured`` Sentinels, else None.

    One Sentinel can be partitioned away or misconfigured: silent ones count against, so a
    minority's word is never taken for the master."""
    votes = Counter(a for a in answers.values() if a is not None)
    for addr, n in votes.most_common():
        if n * 2 > configured:
            return addr
    return None


async def ask_sentinels(target: RedisTarget) -> dict[Address, Address | None]:
    """Each configured Sentinel's answer (None when it did not answer)."""
    answers = await asyncio.gather(*(_ask_one(target, s) for s in target.sentinels))
    return dict(zip(target.sentinels, answers, strict=True))


async def _view_of(target: RedisTarget, sentinel: Address) -> tuple[Address, int] | None:
    """The master ``sentinel`` names, and how many of its replicas it does not hold for down."""

    async def view(r: Redis) -> tuple[Address, int]:
        master: Any = await r.sentinel_master(target.master_name)  # a dict, typed loosely
        replicas = await r.sentinel_slaves(target.master_name)
        # "Disconnected" counts: it says only that the Sentinel's own link is down, and a
        # promotion kills every normal client of the promoted replica, the Sentinels' links
        # included. Left out, the replica being promoted dropped from the count for that
        # moment, and a WAIT on the old master met by the other replica alone lost writes
        # (the demotion test's).
        up = sum(not (x["is_sdown"] or x["is_odown"]) for x in replicas)
        return (str(master["ip"]), int(master["port"])), up

    tls = target.tls_options()
    return await ask_once(sentinel, target.sentinel_password, target.timeout, view, **tls)


async def replicas_to_wait_for(target: RedisTarget, master: Address) -> int | None:
    """How many replicas a write on ``master`` must reach before the copy it protects may go:
    every replica of ``master`` some Sentinel does not hold for down (the most any counts), at
    least one; None when fewer than a majority of the Sentinels name ``master`` (a failover
    moved on, or none can be asked): no WAIT on it then proves the write survives.

    Acknowledged by one replica of three is not enough: in a failover the Sentinels may promote
    the other, and the one that acknowledged then resyncs from the new master, dropping the
    write (a partition drill lost effects so). Written to every live replica, a write is on
    whichever the Sentinels promote; a replica that stopped following (promoted, cut off) makes
    the WAIT fall short, and the copy stays. Counted for ``master`` only: right after a
    failover the Sentinels list the new master's replicas, while a process still on the old
    master could have its WAIT met by a replica about to be moved to the new one, which then
    discards the write. A fixed address (no Sentinels): one."""
    if not target.sentinels:
        return 1
    views = await asyncio.gather(*(_view_of(target, s) for s in target.sentinels))
    counts = [up for v in views if v is not None for addr, up in [v] if addr == master]
    if len(counts) < len(target.sentinels) // 2 + 1:
        return None
    return max([1, *counts])


async def role_of(addr: Address, password: str | None, wait: float, **tls: Any) -> str | None:
    """``master``, ``slave`` or ``sentinel`` (ROLE's first field); None without an answer."""

    async def role(r: Redis) -> str:
        return str((await r.role())[0])

    return await ask_once(addr, password, wait, role, **tls)


async def resolve_master(target: RedisTarget) -> Address:
    """The master a Sentinel names, confirmed by ROLE; else RedisUnavailable."""
    if target.fixed is not None:
        return target.fixed
    answers = await ask_sentinels(target)
    seen: list[Address] = []
    for addr in answers.values():
        if addr is None or addr in seen:
            continue
        seen.append(addr)
        if await role_of(addr, target.password, target.timeout, **target.tls_options()) == "master":
            return addr
    raise RedisUnavailable(
        f"no confirmed master {target.master_name!r} (sentinels answered: {len(seen)})"
    )


class MasterClient:
    """A redis.asyncio client bound to the confirmed master, resolved again after errors."""

    def __init__(self, target: RedisTarget, *, service: str, pod: str) -> None:
        self.target = target
        self.service = service
        self.name = connection_name(service, pod)
        # The master the connection in use talks to; None while there is none (not connected
        # yet, or resolving again after a failover): /status reports it, the operator reads it.
        # A fixed address (no Sentinel) is the one master such a process ever uses: it stays.
        self.address: str | None = None
        self._last: str | None = None  # the master of the previous connection, for the log
        self._redis: Redis | None = None
        # Counts the connections made: writes made under one epoch went to one server, so a
        # WAIT under the same epoch covers them (a WAIT on another server covers nothing).
        self.epoch = 0
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._retired: dict[asyncio.Task[None], Redis] = {}  # old connections, closing soon

    async def get(self) -> Redis:
        if self._redis is not None:
            return self._redis
        async with self._lock:
            if self._redis is None:
                addr = await resolve_master(self.target)
                r = client(
                    addr,
                    self.target.password,
                    self.target.timeout,
                    client_name=self.name,
                    db=self.target.db,
                    **self.target.tls_options(),
                )
                try:
                    await r.ping()
                except (rex.RedisError, OSError) as e:
                    await r.aclose()
                    raise RedisUnavailable(f"master {fmt(addr)} did not answer") from e
                self._redis = r
                self.epoch += 1
                if self._last != fmt(addr):
                    log.info("redis master in use", extra={"address": fmt(addr)})
                self.address = self._last = fmt(addr)
                set_master(self.service, self.address)
        return self._redis

    async def reset(self) -> None:
        """Drop the connection; the next get() resolves the master again."""
        old, self._redis = self._redis, None
        if old is not None:
            if self.target.fixed is None:
                self.address = None
                set_master(self.service, None)
            count_reconnect(self.service)
            # Closed one socket timeout later, not now: other tasks may be mid-command on it,
            # and a client closed under them fails with errors of no class (RuntimeError) that
            # would pass for a handler's. By then every command on it has ended either way.
            self._retired[asyncio.create_task(self._close_later(old))] = old

    async def _close_later(self, old: Redis) -> None:
        await asyncio.sleep(self.target.timeout)
        with contextlib.suppress(Exception):
            await old.aclose()
        me = asyncio.current_task()
        if me is not None:
            self._retired.pop(me, None)

    async def call(self, fn: Callable[[Redis], Awaitable[T]], *, deadline: float) -> T:
        """Run ``fn`` on the master, resolving again and retrying until ``deadline`` seconds."""
        return (await self.call_on(fn, deadline=deadline))[0]

    async def call_on(
        self, fn: Callable[[Redis], Awaitable[T]], *, deadline: float
    ) -> tuple[T, int]:
        """``call``, also returning the epoch of the connection ``fn`` succeeded on."""
        end = time.monotonic() + deadline
        # Full jitter: many pods must not stampede the new master together.
        delays = Backoff(0.05, 1.0)
        while True:
            r: Redis | None = None
            try:
                r = await self.get()
                epoch = self.epoch  # read with no await since get(): the epoch of ``r``
                return await fn(r), epoch
            except Exception as e:
                # A connection dropped under ``fn`` (a failover moved on) fails it with
                # whatever error: that is the master moving too, not an error of ``fn``.
                if not (master_lost(e) or (r is not None and r is not self._redis)):
                    raise
                err: Exception = e
            if r is None or r is self._redis:  # else another task has moved on already
                await self.reset()
            left = end - time.monotonic()
            if left <= 0:
                raise RedisUnavailable(f"redis: {type(err).__name__}") from err
            await asyncio.sleep(min(left, delays.wait()))

    async def check(self) -> None:
        """Move to the master the Sentinels name when it is not the one in use, and connect
        again after a reset nobody followed up: an idle process must not keep, nor report,
        a demoted master until its next command."""
        if self._redis is None:
            if self._last is not None:
                await self.get()  # connected before: resolve again now, not at the next use
            return
        if self.target.fixed is not None:
            return
        answers = [a for a in (await ask_sentinels(self.target)).values() if a is not None]
        if answers and all(fmt(a) != self.address for a in answers):
            log.warning("sentinels name another master", extra={"was": self.address})
            await self.reset()
            await self.get()

    def start_watch(self, interval: float = 1.0) -> None:
        """Follow failovers even while no command fails (a quiet worker, a receiver)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                with contextlib.suppress(Exception):
                    await self.check()

        if self._watch is None:
            self._watch = asyncio.create_task(loop(), name=f"sentinel-watch:{self.name}")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        retired, self._retired = self._retired, {}
        for task, client_ in retired.items():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await client_.aclose()  # also when the task was cancelled before it ran
        old, self._redis = self._redis, None
        if old is not None:
            await old.aclose()
        set_master(self.service, None)
