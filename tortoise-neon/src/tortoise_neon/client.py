"""Tortoise's asyncpg client, riding out a Neon compute's restarts and its pooler (the retries and
what they never repeat: docs/app-on-neon.md)."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from tortoise_neon import pool
from tortoise_neon.error_chain import driver_error
from tortoise_neon.errors import LOST, DatabaseError, explain_error, used_a_closed_connection
from tortoise_neon.read_your_writes import cookie_key
from tortoise_neon.replicas import ReadOnPrimary
from tortoise_neon.routing import ReadRouter, is_read, replica_connection, replica_read

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base import client as base

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3  # a read, on a new connection each time the one it had was lost
# Prepared statements a pooler lost (26000) or mixed up (42P05), or a plan a migration made stale.
STATEMENT_ERRORS = (asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError,
                    asyncpg.InvalidCachedStatementError)


class Unavailable(DatabaseError):
    """The database could not run a statement now; ``str()`` is the one line for the log."""


class NotSaved(Unavailable):
    """Nothing of the request's change reached the database: safe to send it again."""


class MaybeSaved(Unavailable):
    """The connection was lost after a write was sent: it may or may not have been saved."""


def is_lost(exc: object) -> bool:
    """The connection is gone: lost, or found closed before anything was sent."""
    return isinstance(exc, LOST) or (isinstance(exc, BaseException)
                                     and used_a_closed_connection(exc))


def lost_error(exc: BaseException, sent_a_write: bool) -> Unavailable:
    """MaybeSaved if a write may have left before the connection was lost, else NotSaved."""
    may_have_run = sent_a_write and not used_a_closed_connection(exc)
    return (MaybeSaved if may_have_run else NotSaved)(explain_error(exc))


class TerminateBroken(base.PoolConnectionWrapper):  # type: ignore[type-arg]
    """Gives a connection back to the pool, or closes a lost one: the pool opens a new one."""

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.connection is not None and is_lost(exc):
            with suppress(asyncpg.InterfaceError):  # closed: the pool has taken it back already
                self.connection.terminate()
        await super().__aexit__(exc_type, exc, tb)


class RetryingClient:
    """Runs a lost read again, and turns the statement cache off when a pooler loses statements."""

    def _root(self) -> AsyncpgDBClient:
        client: Any = self
        while isinstance(client, base.TransactionalDBClient):
            client = client._parent
        return client  # type: ignore[no-any-return]

    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        in_transaction = isinstance(self, base.TransactionalDBClient)
        query = args[0] if args and isinstance(args[0], str) else ""
        # A transaction's statements save nothing once its connection is lost: it rolls back.
        sends_a_write = not (in_transaction or is_read(query))
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
                if not is_lost(exc):
                    raise
                # The restart or the pooler that ended it ended the pool's others too: each is
                # replaced when next acquired, so the read runs again on a really new one.
                await self._expire_pool()
                failure = lost_error(exc, sends_a_write)
                if in_transaction or isinstance(failure, MaybeSaved) or attempt >= READ_ATTEMPTS:
                    raise failure from wrapped
                attempt += 1

    async def _expire_pool(self) -> None:
        root_pool = self._root()._pool
        if root_pool is not None:
            await root_pool.expire_connections()

    async def _cache_off(self, exc: BaseException) -> None:
        """Turn the statement cache off for this process: one log line, the first time."""
        connect = self._root().extra.get("connect")
        if connect is None or getattr(connect, "statement_cache_off", True):
            return
        connect.statement_cache_off = True
        what = (f"a prepared statement went stale after a schema change ({type(exc).__name__})"
                if isinstance(exc, asyncpg.InvalidCachedStatementError) else
                f"the pooler does not keep prepared statements ({str(exc).splitlines()[0]})")
        log.warning("Statement cache off for this process: %s; statements are prepared each "
                    "time from now on (statement_cache_size=0 in DATABASE_URL starts that way)",
                    what)
        await self._expire_pool()  # each is replaced, cache off, on release


class Client(RetryingClient, AsyncpgDBClient):
    """Tortoise's asyncpg client, with the retries and reads sent to DATABASE_URL_REPLICA."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        replicas = kwargs.pop("replicas", None)
        super().__init__(*args, **kwargs)
        self.router = ReadRouter(replicas, cookie_key()) if replicas else None

    async def create_pool(self, **kwargs: Any) -> Any:
        return await pool.create_pool(**kwargs)

    def acquire_connection(self) -> Any:
        on_replica = replica_read.get()
        if on_replica is not None:
            return replica_connection(*on_replica)
        return TerminateBroken(self, self._pool_init_lock)

    def _in_transaction(self) -> base.TransactionContext:
        if self.router is not None:
            self.router.task_wrote()  # a transaction is the primary's, and so is what follows it
        return base.TransactionContextPooled(Transaction(self), self._pool_init_lock)

    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self.router is not None:
            query = args[0] if args and isinstance(args[0], str) else ""
            if not self.router.replica_may_serve(func, query):
                self.router.task_wrote()  # this task's reads go to the primary from now on
            else:
                with suppress(ReadOnPrimary):
                    return await self.router.read_on_replica(self, func, *args, **kwargs)
        return await super()._translate_exceptions(func, *args, **kwargs)

    async def _close(self) -> None:
        await super()._close()
        if self.router is not None:
            await self.router.close()


class Transaction(RetryingClient, TransactionWrapper):
    """A transaction: nothing in it is repeated (it is gone with its connection)."""

    def _in_transaction(self) -> base.TransactionContext:
        return base.NestedTransactionContext(Transaction(self))

    async def commit(self) -> None:
        try:
            await super().commit()
        except Exception as exc:
            if not is_lost(exc):
                raise
            self._lost()  # NotSaved if COMMIT never left (the server rolled back), else MaybeSaved
            raise lost_error(exc, sent_a_write=True) from exc

    async def rollback(self) -> None:
        try:
            await super().rollback()
        except Exception as exc:
            if not isinstance(exc, (*LOST, asyncpg.InterfaceError)):
                raise
            self._lost()  # the server rolled back with the connection: the first error stands

    def _lost(self) -> None:
        self._finalized = True
        with suppress(AttributeError, asyncpg.InterfaceError):  # none, or the pool has it back
            self._connection.terminate()  # the pool replaces it


client_class = Client  # Tortoise's engine interface: engine "tortoise_neon.client"
