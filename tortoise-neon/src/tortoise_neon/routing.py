"""Where a read goes: a replica that has what the request must see, or the primary (the rules and
their cost: docs/replicas-and-workers.md)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.errors import LOST, DatabaseError, used_a_closed_connection
from tortoise_neon.replicas import ReadOnPrimary, Replica, Write, lsn

import asyncpg

log = logging.getLogger(__name__)

ROUTED = {"execute_query", "execute_query_dict"}  # Tortoise's read paths: never a script, insert
ACQUIRE_WAIT = 5.0  # seconds a read waits for a replica connection before using the primary
RECHECK = 0.1  # seconds: a replica found behind is asked again after this; the primary meanwhile
LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)
REPLAYED = "SELECT pg_last_wal_replay_lsn()::text"  # NULL: not a standby, so it has everything
EVERYTHING = 1 << 64  # beyond any WAL position
# What a read on a replica may meet: the replica down (left alone a while), or the statement
# refused. Each sends the read to the primary (a bug still raises).
REPLICA_DOWN = (*LOST, DatabaseError, asyncio.TimeoutError, TimeoutError, asyncpg.InterfaceError)
REPLICA_FAILURES = (*REPLICA_DOWN, asyncpg.PostgresError, asyncpg.InternalClientError, OSError)


@dataclass
class RoutingState:
    """Where one task's reads may go: a script's, or one web request's."""

    wrote: bool = False  # it wrote: its reads go to the primary from now on
    must_see: Write | None = None  # the client's last write, from its cookie or db-wal header
    bad_cookie: bool = False  # a cookie that did not parse, verify or was too old: cleared
    replica: Replica | None = None  # the replica this request reads from (checked once)
    caught_up: bool | None = None  # whether that replica has replayed ``needs``
    # Set at the request's first read: the later of ``must_see`` and the process's latest write.
    needs: Write | None = None


# Each request sets its own (``ReadYourWrites``); a script's task keeps one throughout.
request_state: ContextVar[RoutingState | None] = ContextVar("database_reads", default=None)
_pinned: ContextVar[bool] = ContextVar("database_primary", default=False)
# Set while a read runs on a replica: Tortoise's acquire_connection() gives its connection.
replica_read: ContextVar[tuple[Replica, RoutingState] | None] = ContextVar(
    "replica_read", default=None)


def routing_state() -> RoutingState:
    """This task's routing state, created on first use."""
    state = request_state.get()
    if state is None:
        state = RoutingState()
        request_state.set(state)
    return state


@contextmanager
def primary() -> Iterator[None]:
    """Every read in the block goes to the primary: ``with tortoise_neon.primary(): ...``, for
    a read that must see another client's latest write."""
    token = _pinned.set(True)
    try:
        yield
    finally:
        _pinned.reset(token)


def is_read(query: str) -> bool:
    """A statement that changes nothing: every part of it a SELECT (a data-modifying WITH, or a
    SELECT after an INSERT in one script, counts as a write)."""
    parts = [part.strip() for part in query.split(";")]
    return any(parts) and all(p.upper().startswith("SELECT") for p in parts if p)


@asynccontextmanager
async def replica_connection(replica: Replica, state: RoutingState) -> AsyncIterator[Any]:
    """Stands in for Tortoise's ``PoolConnectionWrapper`` for one read on a replica; first, once
    per request that needs it, asks the replica how far it has replayed (one round trip)."""
    pool = replica.pool
    assert pool is not None
    try:
        connection = await asyncio.wait_for(pool.acquire(), ACQUIRE_WAIT)
    except (TimeoutError, asyncio.TimeoutError):
        if pool.get_size():  # busy, not down: this read goes to the primary
            raise ReadOnPrimary from None
        raise
    try:
        needs = state.needs
        if state.caught_up is None and needs is not None:
            replayed = await connection.fetchval(REPLAYED)
            log.debug("Read replica %s has replayed %s", replica.name, replayed)
            replica.replayed = max(replica.replayed,
                                   EVERYTHING if replayed is None else lsn(replayed))
            state.caught_up = replica.replayed >= needs.position
            if not state.caught_up:
                replica.behind_at = time.monotonic()
                replica.found_behind(needs)
        if state.caught_up is False:
            raise ReadOnPrimary
        yield connection
    except LOST:
        connection.terminate()
        raise
    finally:
        if replica.pool is not None:
            await replica.pool.release(connection)


class ReadRouter:
    """The replicas of one client (DATABASE_URL_REPLICA), and where each read goes."""

    def __init__(self, replicas: Iterable[DatabaseSettings], key: bytes | None) -> None:
        self.replicas = [Replica(settings) for settings in replicas]
        self._turns = itertools.cycle(self.replicas)
        self.key = key  # signs the cookie (READ_YOUR_WRITES_SECRET); None: the cookie is unsigned
        self.latest = Write()  # this process's latest write: no read goes to a replica behind it

    def replica_may_serve(self, func: Any, query: str) -> bool:
        """Tortoise's read path, a SELECT that locks nothing (select_for_update is the primary's)."""
        return (getattr(func, "__name__", "") in ROUTED and is_read(query)
                and not LOCKING.search(query))

    async def read_on_replica(self, client: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        """The read's result from a replica, or ReadOnPrimary. A failed replica is left alone a
        while."""
        replica = self._replica_for_read()
        token = replica_read.set((replica, routing_state()))
        try:
            result = await func(client, *args, **kwargs)
        except REPLICA_FAILURES as exc:
            if isinstance(exc, REPLICA_DOWN) or used_a_closed_connection(exc):
                replica.failed(exc)
            else:  # 25006 (a SELECT that writes), a table a migration just made, a conflict
                log.debug("Read on replica %s failed (%s): running it on the primary",
                          replica.name, exc)
            raise ReadOnPrimary from exc
        finally:
            replica_read.reset(token)
        log.debug("Read ran on replica %s", replica.name)
        return result

    def _replica_for_read(self) -> Replica:
        state = routing_state()
        if state.wrote or _pinned.get() or state.caught_up is False:
            raise ReadOnPrimary
        replica = state.replica
        if replica is None or not replica.usable():
            turn = itertools.islice(self._turns, len(self.replicas))  # each replica once
            replica = next((r for r in turn if r.usable()), None)
            if replica is None:
                raise ReadOnPrimary
            if state.replica is not None:  # another replica: check it again
                state.caught_up = None
            state.replica = replica
        if state.caught_up is None:
            if state.needs is None:  # the request's first read: what it must see, from now on
                client = state.must_see or self.latest
                state.needs = max(self.latest, client, key=attrgetter("position"))  # the later
            if replica.replayed >= state.needs.position:
                state.caught_up = True  # known without asking: no round trip
            elif time.monotonic() - replica.behind_at < RECHECK:
                state.caught_up = False  # found behind a moment ago: the primary, no round trip
                replica.found_behind(state.needs)
                raise ReadOnPrimary
        return replica

    def task_wrote(self) -> None:
        """This task wrote: its reads go to the primary from now on."""
        routing_state().wrote = True

    def remember_write(self, position: str) -> None:
        """A request's write committed, the primary at ``position`` after it: no read in this
        process goes to a replica that has not replayed that far."""
        if lsn(position) > self.latest.position:
            self.latest = Write(lsn(position), time.time())

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()
