"""What the package borrows from Tortoise ORM and asyncpg beyond their public API (the list:
docs/borrowings.md): each test fails on an upgrade that changes a borrowing, before anything
else breaks in a way that is harder to read."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import tortoise_neon
from tortoise_neon.client import Client, Resilient, Transaction
from tortoise_neon.connecting import is_not_ready
from tortoise_neon.errors import used_a_closed_connection
from tortoise_neon.schema import _recorder_table_sql
from tortoise_neon.testing.fixtures import Postgres, migrate_database, project_config, run

import asyncpg
import pytest
from tortoise import Tortoise, connections
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.migrations.executor import MigrationExecutor
from tortoise.transactions import in_transaction

from tests.project.members import Member


@asynccontextmanager
async def tortoise_on(pg: Postgres, db_url: str) -> AsyncIterator[Client]:
    settings = tortoise_neon.parse_database_url(db_url)
    if pg.server and pg.server.ca_path:
        settings.sslrootcert = str(pg.server.ca_path)
    await Tortoise.init(config=project_config(settings))
    try:
        yield connections.get("default")
    finally:
        await Tortoise.close_connections()


def test_every_statement_goes_through_translate_exceptions(
        pg: Postgres, dbname: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tortoise's asyncpg client runs each statement through ``_translate_exceptions(func,
    *args)``, its first argument the SQL: client.py's retries and cache switch hook there."""
    assert list(inspect.signature(AsyncpgDBClient._translate_exceptions).parameters)[:2] == [
        "self", "func"]
    seen: list[str] = []
    original = Resilient._translate_exceptions

    async def counting(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(args[0] if args and isinstance(args[0], str) else "")
        return await original(self, func, *args, **kwargs)

    monkeypatch.setattr(Resilient, "_translate_exceptions", counting)
    migrate_database(pg, dbname)

    async def go() -> None:
        async with tortoise_on(pg, db_url):
            await Member.create(name="Ada")
            await Member.all().count()

    run(go())
    assert any(sql.startswith("INSERT") for sql in seen), seen
    assert any(sql.startswith("SELECT COUNT") for sql in seen), seen


def test_transactions_pools_and_parents(pg: Postgres, dbname: str, db_url: str) -> None:
    """``in_transaction()`` opens the client's ``_in_transaction()`` (client.py returns its own
    Transaction); a transaction reaches its client through ``_parent``; the client's pool is
    asyncpg's (``_pool``, with ``expire_connections``), guarded by ``_pool_init_lock``."""

    async def go() -> None:
        async with tortoise_on(pg, db_url) as client:
            await client.execute_query("SELECT 1")
            assert isinstance(client._pool, asyncpg.Pool)
            assert callable(client._pool.expire_connections)
            assert isinstance(client._pool_init_lock, asyncio.Lock)
            async with in_transaction() as transaction:
                assert isinstance(transaction, Transaction)
                assert isinstance(transaction, TransactionWrapper)
                assert transaction._parent is client
                assert Resilient._root(transaction) is client

    run(go())


def test_the_migration_executors_schema_editor(pg: Postgres, dbname: str, db_url: str) -> None:
    """schema.py takes the migrations table's CREATE TABLE from Tortoise's executor
    (``_schema_editor(atomic=False)._get_model_sql_data(model).table_sql``)."""
    assert "atomic" in inspect.signature(MigrationExecutor._schema_editor).parameters

    async def go() -> str:
        async with tortoise_on(pg, db_url) as client:
            return _recorder_table_sql(client)

    sql = run(go())
    assert sql.startswith('CREATE TABLE IF NOT EXISTS "tortoise_migrations"'), sql
    assert '"app"' in sql and '"name"' in sql, sql


def test_asyncpg_says_a_connection_is_closed_as_errors_py_reads_it(
        pg: Postgres, db_url: str) -> None:
    """The texts errors.py ``used_a_closed_connection`` matches: a closed connection's
    InterfaceError."""

    async def go() -> BaseException:
        connection = await pg.admin()
        await connection.close()
        try:
            await connection.execute("SELECT 1")
        except asyncpg.InterfaceError as exc:
            return exc
        raise AssertionError("a closed connection ran a statement")

    closed = run(go())
    assert used_a_closed_connection(closed), str(closed)


@contextmanager
def refusing_tls() -> Iterator[int]:
    """A listener that answers PostgreSQL's SSLRequest with "N" (no TLS here)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        with client:
            client.recv(8)
            client.sendall(b"N")
            client.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


def test_asyncpg_says_a_server_refused_tls_as_connecting_py_reads_it() -> None:
    """connecting.py never waits for a server that refused TLS: asyncpg's "rejected SSL
    upgrade" text."""
    with refusing_tls() as port:
        async def go() -> BaseException:
            try:
                await asyncpg.connect(host="127.0.0.1", port=port, user="u", password="p",
                                      database="d", ssl="require", timeout=10)
            except ConnectionError as exc:
                return exc
            raise AssertionError("connected to a server without TLS")

        refused = asyncio.run(go())
    assert "rejected SSL upgrade" in str(refused), repr(refused)
    settings = tortoise_neon.parse_database_url(f"postgresql://u:p@127.0.0.1:{port}/d?sslmode=require")
    assert not is_not_ready(refused, settings)


def test_asyncpg_pool_internals_as_pool_py_uses_them() -> None:
    from tortoise_neon.pool import SlotAwarePool

    from asyncpg.pool import Pool, PoolConnectionHolder

    assert list(inspect.signature(Pool._acquire).parameters) == ["self", "timeout"], \
        "asyncpg's Pool._acquire(timeout) changed: tortoise_neon/pool.py overrides it"
    assert "timeout" in inspect.signature(Pool.release).parameters
    assert "_queue" in Pool.__slots__, "asyncpg's Pool keeps no _queue: tortoise_neon/pool.py reads it"
    assert isinstance(asyncio.LifoQueue()._queue, list)  # type: ignore[attr-defined]
    assert callable(PoolConnectionHolder.is_connected)
    assert issubclass(SlotAwarePool, Pool)
    assert "create_pool" in vars(AsyncpgDBClient), \
        "Tortoise's AsyncpgDBClient.create_pool is gone: tortoise_neon/client.py overrides it"
    client = Client(user="u", password="p", database="d", host="h", port=5432,
                    replicas=[], connection_name="default")
    assert "replicas" not in client.extra and client.replicas is None
