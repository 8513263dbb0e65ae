"""Tortoise's asyncpg client, riding out what a Neon compute does: restarts and a pooler.

Tortoise runs every statement through one method of its client (``_translate_exceptions``,
which wraps ``execute_query``, ``execute_insert``, ``execute_script``, ...): the hook is there,
once, so the scripts, the app and the user's own code all get it.

- A read (a SELECT, outside a transaction) whose connection was lost runs again on a new
  connection (the pool's others are expired: the same restart ended them), up to
  ``READ_ATTEMPTS`` times; the pool's ``connect`` hook waits for a compute
  that is waking up (``connecting.py``).
- A write is never repeated when it may have reached the server: it raises ``NotSaved`` or
  ``MaybeSaved``, which the app answers with 503 and ``Retry-After`` (``asgi.py``).
- A pooler that does not keep prepared statements (26000, 42P05), or keeps one that a
  migration made stale (``InvalidCachedStatementError``), turns the statement cache off for the
  process, with one log line; a statement that did not run is run again once, outside a
  transaction.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any

from tortoise_neon.errors import LOST, DatabaseError, explain_error, used_a_closed_connection
from tortoise_neon.replicas import (
    Behind,
    Reads,
    Replica,
    ReplicaConnection,
    Replicas,
    cookie_key,
    is_locking,
)

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    NestedTransactionContext,
    PoolConnectionWrapper,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.exceptions import BaseORMException

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3  # a read, on a new connection each time the one it had was lost

# Prepared statements a pooler lost or mixed up, or a cached plan a migration made stale.
STATEMENT_ERRORS = (
    asyncpg.InvalidSQLStatementNameError,  # 26000: prepared statement ... does not exist
    asyncpg.DuplicatePreparedStatementError,  # 42P05: prepared statement ... already exists
    asyncpg.InvalidCachedStatementError,  # after ALTER COLUMN TYPE, through PgBouncer
)


class Unavailable(DatabaseError):
    """The database could not run a statement now; ``str()`` is the one line for the log."""

    may_have_been_saved = False


class NotSaved(Unavailable):
    """Nothing of the request's change reached the database: safe to send it again."""


class MaybeSaved(Unavailable):
    """The connection was lost after a write was sent: it may or may not have been saved."""

    may_have_been_saved = True


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error under Tortoise's wrapping (OperationalError from 42P05, ...)."""
    while isinstance(exc, BaseORMException) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__
    return exc


def never_sent(exc: BaseException) -> bool:
    """True when the statement cannot have reached the server (``used_a_closed_connection``)."""
    return used_a_closed_connection(exc)


class TerminateBroken(PoolConnectionWrapper):  # type: ignore[type-arg]
    """Gives a connection back to the pool, or closes it if it was lost or left in a broken
    state: the pool then opens a new one for the next statement, instead of handing it out."""

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.connection is not None and (isinstance(exc, LOST) or (
                isinstance(exc, BaseException) and never_sent(exc))):
            try:
                self.connection.terminate()
            except asyncpg.InterfaceError:  # closed: the pool has taken it back already
                pass
        await super().__aexit__(exc_type, exc, tb)


def is_read(query: str) -> bool:
    """A statement that changes nothing: every part of it a SELECT (a data-modifying WITH, or a
    SELECT after an INSERT in one script, counts as a write)."""
    parts = [part.strip() for part in query.split(";")]
    return any(parts) and all(p.upper().startswith("SELECT") for p in parts if p)


class Resilient:
    """The retries and the statement-cache switch, for the client and its transactions."""

    def _root(self) -> AsyncpgDBClient:
        client: Any = self
        while isinstance(client, TransactionalDBClient):
            client = client._parent
        return client  # type: ignore[no-any-return]

    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        in_transaction = isinstance(self, TransactionalDBClient)
        query = args[0] if args and isinstance(args[0], str) else ""
        read = not in_transaction and is_read(query)
        attempt, statement_retried = 1, False
        while True:
            try:
                return await super()._translate_exceptions(  # type: ignore[misc]
                    func, *args, **kwargs)
            except Exception as wrapped:
                exc = driver_error(wrapped)
                if isinstance(exc, STATEMENT_ERRORS):
                    await self._cache_off(exc)
                    if in_transaction or statement_retried:  # the transaction is aborted
                        raise NotSaved(explain_error(exc)) from wrapped
                    statement_retried = True  # it did not run: once more, unprepared
                    continue
                if isinstance(exc, Unavailable):
                    raise
                if isinstance(exc, DatabaseError):  # a new connection could not be opened
                    raise NotSaved(str(exc)) from wrapped  # (connecting.py): nothing was sent
                if not isinstance(exc, LOST) and not never_sent(exc):
                    raise
                await self._expire_pool()
                line = explain_error(exc)
                if in_transaction:  # what the transaction did is rolled back with it
                    raise NotSaved(line) from wrapped
                if not (read or never_sent(exc)):
                    raise MaybeSaved(line) from wrapped
                if attempt >= READ_ATTEMPTS:
                    raise NotSaved(line) from wrapped
                attempt += 1

    async def _expire_pool(self) -> None:
        """A lost connection: the compute restarted or the pooler went, so the pool's other
        connections are gone too, though asyncpg may not have noticed yet. Expired, each is
        replaced when next acquired (or released), so a read runs again on a connection that is
        really new, not on another that the same restart ended (the pool holds up to 5)."""
        pool = self._root()._pool
        if pool is not None:
            await pool.expire_connections()

    async def _cache_off(self, exc: BaseException) -> None:
        """Turn the statement cache off for this process: one log line, the first time."""
        root = self._root()
        connect = root.extra.get("connect")
        if connect is None or getattr(connect, "statement_cache_off", True):
            return
        connect.statement_cache_off = True
        what = (f"a prepared statement went stale after a schema change ({type(exc).__name__})"
                if isinstance(exc, asyncpg.InvalidCachedStatementError) else
                f"the pooler does not keep prepared statements ({str(exc).splitlines()[0]})")
        log.warning("Statement cache off for this process: %s; statements are prepared each "
                    "time from now on (statement_cache_size=0 in DATABASE_URL starts that way)",
                    what)
        if root._pool is not None:
            await root._pool.expire_connections()  # each is replaced, cache off, on release


# The statements that may go to a replica (Tortoise's read paths; never a script or an insert).
ROUTED = {"execute_query", "execute_query_dict"}
# Set while a read runs on a replica: the connection it acquires is the replica's.
_replica_read: ContextVar[tuple[Replica, Reads] | None] = ContextVar("replica_read", default=None)
_ON_PRIMARY = object()
# What a read on a replica may meet; each sends it to the primary (a bug still raises).
REPLICA_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                    OSError, DatabaseError, asyncio.TimeoutError, *LOST)


class Client(Resilient, AsyncpgDBClient):
    """Tortoise's asyncpg client, with retries, the statement-cache switch (see above), and
    reads sent to DATABASE_URL_REPLICA's replicas (``replicas.py``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        replicas = kwargs.pop("replicas", None)
        super().__init__(*args, **kwargs)
        self.replicas = Replicas(replicas, cookie_key()) if replicas else None

    async def create_pool(self, **kwargs: Any) -> Any:
        from tortoise_neon.pool import create_pool

        return await create_pool(**kwargs)

    def acquire_connection(self) -> Any:
        target = _replica_read.get()
        if target is not None:
            return ReplicaConnection(*target)
        return TerminateBroken(self, self._pool_init_lock)

    def _in_transaction(self) -> TransactionContext:
        if self.replicas is not None:
            self.replicas.wrote()  # a transaction is the primary's, and so is what follows it
        return TransactionContextPooled(Transaction(self), self._pool_init_lock)

    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self.replicas is not None:
            query = args[0] if args and isinstance(args[0], str) else ""
            if getattr(func, "__name__", "") in ROUTED and is_read(query) and not is_locking(query):
                target = self.replicas.for_read()
                if target is not None:
                    result = await self._on_replica(target, func, *args, **kwargs)
                    if result is not _ON_PRIMARY:
                        self.replicas.served["replica"] += 1
                        return result
                self.replicas.served["primary"] += 1
            else:
                self.replicas.wrote()  # this task's reads go to the primary from now on
        return await super()._translate_exceptions(func, *args, **kwargs)

    async def _on_replica(self, target: tuple[Replica, Reads], func: Any, *args: Any,
                          **kwargs: Any) -> Any:
        """The read on the replica, or ``_ON_PRIMARY`` when it must run on the primary: the
        replica is behind the client's write, down, waking, or refused the statement (a read
        runs again safely). A failed replica is left alone for a while: one log line."""
        token = _replica_read.set(target)
        try:
            return await func(self, *args, **kwargs)
        except Behind:
            return _ON_PRIMARY
        except REPLICA_FAILURES as exc:
            if isinstance(exc, (*LOST, DatabaseError, asyncio.TimeoutError, TimeoutError,
                                asyncpg.InterfaceError)) or never_sent(exc):
                target[0].failed(exc)
            else:  # 25006 (a SELECT that writes), a table a migration just made, a conflict
                log.debug("Read on replica %s failed (%s): running it on the primary",
                          target[0].name, exc)
            return _ON_PRIMARY
        finally:
            _replica_read.reset(token)

    async def _close(self) -> None:
        await super()._close()
        if self.replicas is not None:
            await self.replicas.close()


class Transaction(Resilient, TransactionWrapper):
    """A transaction: nothing in it is repeated (it is gone with its connection)."""

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(Transaction(self))

    async def commit(self) -> None:
        try:
            await super().commit()
        except Exception as exc:
            if not (isinstance(exc, LOST) or never_sent(exc)):
                raise
            self._lost()
            if never_sent(exc):  # COMMIT never left: the server rolled everything back
                raise NotSaved(explain_error(exc)) from exc
            raise MaybeSaved(explain_error(exc)) from exc  # it may have committed, or not

    async def rollback(self) -> None:
        try:
            await super().rollback()
        except Exception as exc:
            if not isinstance(exc, (*LOST, asyncpg.InterfaceError)):
                raise
            # The connection is gone, and the server rolled the transaction back with it: the
            # error that brought us here (NotSaved, say) is the one to report.
            self._lost()

    def _lost(self) -> None:
        self._finalized = True
        try:
            self._connection.terminate()  # the pool replaces it
        except (AttributeError, asyncpg.InterfaceError):  # none, or the pool has it back
            pass


client_class = Client  # Tortoise's engine interface: engine "tortoise_neon.client"
