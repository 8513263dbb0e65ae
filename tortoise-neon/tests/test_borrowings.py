"""What the package borrows from Tortoise ORM and asyncpg beyond their public API (the list:
docs/borrowings.md): each test fails on an upgrade that changes a borrowing, before anything
else breaks in a way that is harder to read."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import tortoise_neon
from tortoise_neon.client import Client, RetryingClient, Transaction
from tortoise_neon.connecting import is_not_ready
from tortoise_neon.errors import used_a_closed_connection
from tortoise_neon.migrate import _recorder_table_sql
from tortoise_neon.testing import servers as servers_module
from tortoise_neon.testing.fixtures import (
    Postgres,
    execute,
    migrate_database,
    project_config,
    query,
    run,
)

import asyncpg
import httpx
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
        settings = replace(settings, sslrootcert=str(pg.server.ca_path))
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
    original = RetryingClient._translate_exceptions

    async def counting(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(args[0] if args and isinstance(args[0], str) else "")
        return await original(self, func, *args, **kwargs)

    monkeypatch.setattr(RetryingClient, "_translate_exceptions", counting)
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
                assert RetryingClient._root(transaction) is client

    run(go())


def test_the_migration_executors_schema_editor(pg: Postgres, dbname: str, db_url: str) -> None:
    """migrate.py takes the migrations table's CREATE TABLE from Tortoise's executor
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
    assert "replicas" not in client.extra and client.router is None


# --- issue 28, item 6: the borrowings that had no test yet ------------------------------------


def test_a_transactions_finalized_flag_and_connection_as_client_py_uses_them(
        pg: Postgres, dbname: str, db_url: str) -> None:
    """client.py ``Transaction._lost`` sets Tortoise's ``TransactionWrapper._finalized`` (so that
    leaving ``in_transaction()`` sends no COMMIT or ROLLBACK on a dead connection) and terminates
    ``._connection`` (the asyncpg connection the transaction runs on)."""
    migrate_database(pg, dbname)
    where = "tortoise_neon/client.py Transaction._lost"

    async def go() -> int:
        async with tortoise_on(pg, db_url):
            async with in_transaction() as transaction:
                assert isinstance(transaction, Transaction)
                connection = getattr(transaction, "_connection", None)
                assert isinstance(connection, asyncpg.Connection), (
                    f"Tortoise's TransactionWrapper._connection is not the asyncpg connection "
                    f"any more ({connection!r}): {where} terminates it")
                _, rows = await transaction.execute_query("SELECT pg_backend_pid() AS pid")
                pid = rows[0]["pid"]
                assert connection.get_server_pid() == pid, (
                    f"TransactionWrapper._connection is not the connection the transaction "
                    f"runs on: {where} would terminate another one")
                assert transaction._finalized is False, (
                    f"Tortoise's TransactionWrapper._finalized changed: {where} sets it")
                await Member.create(name="never saved")
                transaction._lost()  # what commit()/rollback() do when the connection was lost
            # Leaving the block sent nothing (a COMMIT on the terminated connection would raise).
            return int(pid)

    pid = run(go())
    assert query(pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 0
    assert backend_gone(pg, dbname, pid), \
        f"{where}: the server still runs the transaction's backend {pid}"


def backend_gone(pg: Postgres, dbname: str, pid: int) -> bool:
    """The server has ended backend ``pid`` (a terminated connection), within 5 s."""
    for _ in range(50):
        if not query(pg, dbname, "SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
            return True
        time.sleep(0.1)
    return False


def test_tortoise_passes_its_method_names_that_client_py_routes_by(
        pg: Postgres, dbname: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """client.py sends a read to a replica when ``func.__name__`` (the Tortoise method that
    ``_translate_exceptions`` wraps) is one of ``ROUTED``: those must still be the names of the
    methods Tortoise's reads go through, and its writes must go through others."""
    from tortoise_neon.routing import ROUTED

    where = "tortoise_neon/client.py Client._translate_exceptions (ROUTED)"
    for name in ROUTED:
        method = getattr(AsyncpgDBClient, name, None)
        assert method is not None, f"Tortoise's AsyncpgDBClient has no {name} any more: {where}"
        assert getattr(method, "__wrapped__", None) is not None and method.__name__ == name, (
            f"Tortoise's AsyncpgDBClient.{name} is no longer wrapped by translate_exceptions "
            f"under its own name: {where}")
    seen: list[tuple[str, str]] = []
    original = Client._translate_exceptions

    async def recording(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        sql = args[0] if args and isinstance(args[0], str) else ""
        seen.append((getattr(func, "__name__", ""), sql.lstrip().split(" ")[0].upper()))
        return await original(self, func, *args, **kwargs)

    monkeypatch.setattr(Client, "_translate_exceptions", recording)
    migrate_database(pg, dbname)

    async def go() -> None:
        async with tortoise_on(pg, db_url):
            await Member.create(name="Ada")
            assert [m.name for m in await Member.all()] == ["Ada"]
            assert await Member.all().values("name") == [{"name": "Ada"}]
            assert await Member.all().count() == 1
            await Member.filter(name="Ada").update(name="Grace")

    run(go())
    names = {name for name, _ in seen}
    assert ROUTED <= names, (f"Tortoise's reads no longer pass {sorted(ROUTED - names)} to "
                             f"_translate_exceptions (it passed {seen}): {where}")
    for name, verb in seen:  # (an UPDATE through execute_query is no read: is_read says so)
        if verb == "SELECT":
            assert name in ROUTED, f"Tortoise reads through {name}, not in ROUTED: {where}"
    assert any(name not in ROUTED for name, verb in seen if verb == "INSERT"), (
        f"Tortoise inserts through a method client.py routes to replicas ({seen}): {where}")


def test_the_pool_connection_wrapper_that_client_py_subclasses_and_routing_py_stands_in_for(
        pg: Postgres, dbname: str, db_url: str) -> None:
    """client.py ``TerminateBroken`` subclasses Tortoise's ``PoolConnectionWrapper(client,
    pool_init_lock)`` (its ``connection``, its ``__aexit__`` that releases); routing.py
    ``replica_connection`` stands in for it on a replica: Tortoise's reads use nothing of the
    wrapper but ``async with client.acquire_connection() as connection``."""
    from tortoise_neon.client import TerminateBroken
    from tortoise_neon.url import parse_replica_urls

    from tortoise.backends.base.client import PoolConnectionWrapper

    from tests.test_replicas import counting_replica_reads

    assert list(inspect.signature(PoolConnectionWrapper.__init__).parameters) == [
        "self", "client", "pool_init_lock"], \
        "Tortoise's PoolConnectionWrapper(client, pool_init_lock) changed: tortoise_neon/client.py"
    assert "connection" in PoolConnectionWrapper.__slots__, \
        "Tortoise's PoolConnectionWrapper.connection is gone: tortoise_neon/client.py reads it"
    for name in ("execute_query", "execute_query_dict"):
        source = inspect.getsource(getattr(AsyncpgDBClient, name))
        assert "async with self.acquire_connection() as connection" in source, (
            f"Tortoise's AsyncpgDBClient.{name} no longer takes its connection from "
            "acquire_connection(): tortoise_neon/routing.py replica_connection stands in there")
        assert "self._pool" not in source and "self._connection" not in source, (
            f"Tortoise's AsyncpgDBClient.{name} uses more than acquire_connection(): "
            "tortoise_neon/routing.py replica_connection would not do")
    migrate_database(pg, dbname)
    query(pg, dbname, "INSERT INTO library_members (name, joined_at) VALUES ('Ada', now()) "
                      "RETURNING id")

    async def go() -> None:
        settings = tortoise_neon.parse_database_url(db_url)
        replicas = parse_replica_urls(db_url)  # the server as its own replica
        if pg.server and pg.server.ca_path:
            settings = replace(settings, sslrootcert=str(pg.server.ca_path))
            replicas = tuple(replace(r, sslrootcert=str(pg.server.ca_path)) for r in replicas)
        settings = replace(settings, replicas=replicas)
        await Tortoise.init(config=project_config(settings))
        try:
            client = connections.get("default")
            wrapper = client.acquire_connection()
            assert isinstance(wrapper, TerminateBroken)
            with pytest.raises(ConnectionResetError):
                async with wrapper as connection:
                    assert wrapper.connection is connection, \
                        "PoolConnectionWrapper.connection is not the connection it handed out"
                    assert connection is not None
                    pid = connection.get_server_pid()
                    raise ConnectionResetError("lost")
            lost.append(pid)
            assert await Member.all().count() == 1  # the pool opens a new one
            with counting_replica_reads() as on_replica:
                for _ in range(100):  # the replica's pool opens in the background
                    await Member.all().values_list("name", flat=True)
                    if on_replica.reads:
                        break
                    await asyncio.sleep(0.05)
            assert on_replica.reads, "no read reached the replica"
            with counting_replica_reads() as on_replica:
                assert [m.name for m in await Member.all()] == ["Ada"]  # execute_query
                assert await Member.all().values("name") == [{"name": "Ada"}]  # execute_query_dict
            assert on_replica.reads == 2, (
                "Tortoise's reads did not run on routing.py replica_connection")
        finally:
            await Tortoise.close_connections()

    lost: list[int] = []
    run(go())
    assert backend_gone(pg, dbname, lost[0]), \
        "tortoise_neon/client.py TerminateBroken did not terminate a lost connection"


def test_what_schema_py_reads_of_tortoises_models_and_migrations(
        pg: Postgres, dbname: str, db_url: str) -> None:
    """migrate.py lists the migrations on disk with ``MigrationLoader(apps,
    MigrationRecorder(None)).load_disk()`` (``disk_migrations``' keys: ``app_label``, ``name``),
    counts the applied ones from the status of its last statement, asyncpg's ``"SELECT <rows>"``,
    and checks each model's columns from ``_meta.fields_db_projection``."""
    from tortoise_neon.migrate import _applied_count, _migrations_on_disk, check_schema

    apps = project_config(tortoise_neon.parse_database_url(db_url))["apps"]
    on_disk = _migrations_on_disk(apps)
    assert on_disk == [("models", "0001_initial")], (
        f"Tortoise's MigrationLoader(apps, MigrationRecorder(None)).load_disk() found {on_disk}: "
        "tortoise_neon/migrate.py _migrations_on_disk")
    migrate_database(pg, dbname)
    columns = {r[0] for r in query(
        pg, dbname, "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'library_members'")}

    async def go() -> tuple[str, int, int, dict[str, str]]:
        async with tortoise_on(pg, db_url) as client:
            async with client.acquire_connection() as connection:
                status = await connection.execute(
                    "SELECT 1; SELECT n FROM generate_series(1, 3) AS n")
            applied = await _applied_count(client, on_disk)
            none = await _applied_count(client, [("models", "9999_not_there")])
            await check_schema()
            return status, applied, none, dict(Member._meta.fields_db_projection)

    status, applied, none, projection = run(go())
    assert status == "SELECT 3", (
        f"asyncpg's status of a script's last SELECT is {status!r}, not 'SELECT <rows>': "
        "tortoise_neon/migrate.py _applied_count parses it")
    assert (applied, none) == (1, 0), (applied, none)
    assert set(projection) >= {"id", "name", "handle", "joined_at"} and set(
        projection.values()) == columns, (
        f"Tortoise's _meta.fields_db_projection is {projection}, the table's columns {columns}: "
        "tortoise_neon/migrate.py check_schema selects them")


def test_postgresqls_texts_as_errors_py_and_schema_py_read_them(
        pg: Postgres, dbname: str, db_url: str) -> None:
    """PostgreSQL's own words that the package matches: a missing column's ``column "x" does
    not exist`` (migrate.py ``check_schema`` names its table), a required column added to rows
    (errors.py ``explain_error``), a database that does not exist (re-sent by Neon's proxy as
    XX000, matched by connect_errors.py ``NEON_FAILURES``)."""
    from tortoise_neon.connect_errors import neon_failure
    from tortoise_neon.errors import DatabaseError, explain_error
    from tortoise_neon.migrate import check_schema

    migrate_database(pg, dbname)
    execute(pg, dbname, "ALTER TABLE library_members DROP COLUMN handle")

    async def go() -> BaseException:
        async with tortoise_on(pg, db_url):
            try:
                await check_schema()
            except DatabaseError as exc:
                return exc
            raise AssertionError("check_schema() passed with a column missing")

    missing_column = run(go())
    assert 'column "handle" of relation "library_members" does not exist' in str(
        missing_column), (f"PostgreSQL's text for a missing column changed ({missing_column}): "
                          "tortoise_neon/migrate.py check_schema replaces ' does not exist'")

    async def provoke() -> tuple[BaseException, BaseException]:
        connection = await pg.admin(dbname)
        try:
            await connection.execute("INSERT INTO library_members (name, joined_at) "
                                     "VALUES ('Ada', now())")
            try:
                await connection.execute("ALTER TABLE library_members ADD COLUMN age int NOT NULL")
            except asyncpg.NotNullViolationError as exc:
                added: BaseException = exc
            else:
                raise AssertionError("a required column was added to a table with rows")
        finally:
            await connection.close()
        try:
            await asyncpg.connect(pg.url("no_such_database_here"), ssl=ssl_for(pg), timeout=10)
        except asyncpg.InvalidCatalogNameError as exc:
            return added, exc
        raise AssertionError("connected to a database that does not exist")

    added, no_database = run(provoke())
    assert explain_error(added).startswith('Cannot add the required column "age" to '
                                           '"library_members"'), (
        f"PostgreSQL's text changed ({added}): tortoise_neon/errors.py explain_error matches "
        "'column ... of relation ... contains null values'")
    through_neon = asyncpg.InternalServerError(str(no_database))  # Neon re-sends the text only
    failure = neon_failure(through_neon)
    assert failure is not None and "does not exist" in failure.words, (
        f"PostgreSQL's text changed ({no_database}): tortoise_neon/connect_errors.py NEON_FAILURES")


def ssl_for(pg: Postgres) -> object:
    """asyncpg's ``ssl=`` for the test server (its throwaway CA), or False without TLS."""
    if pg.server is None:
        return tortoise_neon.ssl_option(tortoise_neon.parse_database_url(pg.url("x")))
    if not pg.server.ca_path:
        return False
    import ssl

    return ssl.create_default_context(cafile=str(pg.server.ca_path))


def test_postgresqls_words_for_a_compute_out_of_slots_as_errors_py_reads_them(
        few_slots: Postgres) -> None:
    """connect_errors.py ``is_slots_full``: 53300 directly, or through Neon's proxy (XX000, the text
    only) when its text starts with "remaining connection slots are reserved" (an ordinary
    role, the last free slots the superuser's) or "sorry, too many clients already"."""
    from tortoise_neon.connect_errors import SLOTS_FULL, is_slots_full
    from tortoise_neon.testing import servers

    server = few_slots.server
    assert server is not None

    async def fill(user: str, password: str) -> BaseException:
        for _ in range(30):
            try:
                held.append(await asyncpg.connect(host=server.host, port=server.port, user=user,
                                                  password=password, database="postgres",
                                                  ssl=False, timeout=10))
            except asyncpg.TooManyConnectionsError as exc:
                return exc
        raise AssertionError(f"30 connections for {user} and no slot ran out")

    held: list[asyncpg.Connection] = []

    async def go() -> tuple[BaseException, BaseException]:
        try:
            reserved = await fill(servers.APP_USER, servers.APP_PASSWORD)
            too_many = await fill(servers.SUPERUSER, servers.SUPER_PASSWORD)
            return reserved, too_many
        finally:
            for connection in held:
                await connection.close()

    reserved, too_many = run(go())
    for exc, words in ((reserved, "remaining connection slots are reserved"),
                       (too_many, "sorry, too many clients already")):
        assert str(exc).startswith(words), (
            f"PostgreSQL says {exc} when the slots are full, not '{words}...': "
            "tortoise_neon/connect_errors.py SLOTS_FULL")
        assert SLOTS_FULL.match(str(exc)) and is_slots_full(exc)
        assert is_slots_full(asyncpg.InternalServerError(str(exc))), (
            f"tortoise_neon/connect_errors.py is_slots_full misses {exc} re-sent by Neon's proxy")


def test_postgresqls_words_for_a_connection_without_tls_as_errors_py_reads_them(
        local_pg: servers_module.PostgresServer) -> None:
    """connect_errors.py ``explain_connect_error`` says a server requires TLS (with sslmode=disable)
    when the refusal's text has "no encryption" (PostgreSQL's pg_hba.conf line), "ssl" or
    "insecure" (Neon's proxy). A ``hostnossl ... reject`` line for a role of this test only."""
    from tortoise_neon.connect_errors import explain_connect_error

    user = "borrowings_tls_only"
    hba = local_pg.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"hostnossl all {user} 127.0.0.1/32 reject\n" + original)
    servers_module.admin_query(local_pg, "SELECT pg_reload_conf()")
    try:
        async def go() -> BaseException:
            for _ in range(50):  # the reload takes a moment
                try:
                    connection = await asyncpg.connect(
                        host=local_pg.host, port=local_pg.port, user=user, password="x",
                        database="postgres", ssl=False, timeout=10)
                except asyncpg.InvalidAuthorizationSpecificationError as exc:
                    return exc
                except asyncpg.PostgresError:  # the new line not read yet: no such role
                    await asyncio.sleep(0.1)
                    continue
                await connection.close()
            raise AssertionError("the server never refused a connection without TLS")

        refused = run(go())
    finally:
        hba.write_text(original)
        servers_module.admin_query(local_pg, "SELECT pg_reload_conf()")
    assert "no encryption" in str(refused), (
        f"PostgreSQL refuses a connection without TLS with {refused}: "
        "tortoise_neon/connect_errors.py explain_connect_error looks for 'no encryption'")
    settings = tortoise_neon.parse_database_url(
        f"postgresql://{user}:x@{local_pg.host}:{local_pg.port}/postgres?sslmode=disable")
    assert "requires TLS" in explain_connect_error(refused, settings)


def test_neon_proxy_texts_as_errors_py_matches_them() -> None:
    """connect_errors.py ``NEON_FAILURES`` matches the texts of Neon's proxy
    (github.com/neondatabase/neon, proxy/src), which it sends as XX000 with the message only. No live Neon here: the texts are
    those of the repository's Neon-faithful proxy (tortoise_neon/testing/neon_proxy.py), and this
    test holds connect_errors.py and that proxy to the same words."""
    from tortoise_neon.connect_errors import explain_connect_error, neon_failure
    from tortoise_neon.testing import neon_proxy

    settings = tortoise_neon.parse_database_url(
        "postgresql://u:p@ep-cool-1.eu-central-1.aws.neon.tech/neondb?sslmode=disable",
        allow_insecure_tls=True)  # the case under test: a user who turned TLS off
    fake = type("Fake", (), {"domain": "eu-central-1.aws.neon.tech"})()
    with pytest.raises(neon_proxy.Refused) as inconsistent:
        neon_proxy.NeonProxy._endpoint_id(fake, "ep-a.eu-central-1.aws.neon.tech",  # type: ignore[arg-type]
                                          "endpoint=ep-b")
    texts = {
        "NO_ENDPOINT": (neon_proxy.NO_ENDPOINT, False),
        "PASSWORD_FAILED": (neon_proxy.PASSWORD_FAILED.format("u"), False),
        "DISABLED": (neon_proxy.DISABLED, False),
        "NOT_FOUND": (neon_proxy.NOT_FOUND, False),
        "QUOTA": (neon_proxy.QUOTA, False),
        "inconsistent project": (str(inconsistent.value), False),
        "NOT_WOKEN": (neon_proxy.NOT_WOKEN, True),
        "TOO_MANY_ATTEMPTS": (neon_proxy.TOO_MANY_ATTEMPTS, True),
        "TOO_MANY_CONNECTIONS": (neon_proxy.TOO_MANY_CONNECTIONS, True),
        "NO_PERMIT": (neon_proxy.NO_PERMIT, True),
    }
    for name, (text, wait) in texts.items():
        failure = neon_failure(asyncpg.InternalServerError(text))
        assert failure is not None, (
            f"tortoise_neon/connect_errors.py NEON_FAILURES does not match Neon's {name} text "
            f"{text!r} (tortoise_neon/testing/neon_proxy.py)")
        assert failure.wait is wait, (name, failure)
    insecure = asyncpg.InternalServerError(neon_proxy.INSECURE)
    assert "requires TLS" in explain_connect_error(insecure, settings), (
        "tortoise_neon/connect_errors.py explain_connect_error does not read Neon's "
        f"{neon_proxy.INSECURE!r} as a server that requires TLS")


def test_sqlites_texts_as_errors_py_reads_them(tmp_path: Path) -> None:
    """errors.py ``explain_error`` reads SQLite's words (DATABASE_URL=sqlite://): "no such
    table", "no such column", "has no column named", "table ... already exists"."""
    import sqlite3

    from tortoise_neon.errors import explain_error

    database = sqlite3.connect(tmp_path / "borrowings.sqlite3")
    database.execute("CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT)")
    cases = [
        ("SELECT * FROM nothing_here", "no such table", "The database has no table"),
        ("SELECT age FROM members", "no such column", "The database schema is behind"),
        ("INSERT INTO members (age) VALUES (1)", "has no column named",
         "The database schema is behind"),
        ("CREATE TABLE members (id INTEGER)", "already exists",
         "A migration creates a table the database already has"),
    ]
    try:
        for sql, words, line in cases:
            with pytest.raises(sqlite3.OperationalError) as raised:
                database.execute(sql)
            assert words in str(raised.value), (
                f"SQLite says {raised.value} for {sql}, not '{words}': tortoise_neon/errors.py "
                "explain_error")
            assert explain_error(raised.value).startswith(line), explain_error(raised.value)
    finally:
        database.close()
    assert str(raised.value).startswith("table "), raised.value


def test_tortoises_validation_error_text_as_asgi_py_reads_it(
        pg: Postgres, dbname: str, db_url: str) -> None:
    """asgi.py answers a Tortoise ``ValidationError`` with 422 and the field, from its text
    ``"<field>: <why>"``; errors.py keeps that text (the field) rather than its cause's."""
    from tortoise_neon.asgi import answer_database_errors
    from tortoise_neon.errors import explain_error

    from fastapi import FastAPI
    from tortoise.exceptions import ValidationError

    migrate_database(pg, dbname)
    app = FastAPI()
    answer_database_errors(app)

    @app.post("/members")
    async def add() -> dict[str, str]:
        await Member.create(name="x" * 51)  # max_length=50
        return {}

    async def go() -> tuple[BaseException, httpx.Response]:
        async with tortoise_on(pg, db_url):
            try:
                await Member.create(name="x" * 51)
            except ValidationError as exc:
                invalid: BaseException = exc
            else:
                raise AssertionError("Tortoise saved a name over max_length")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as web:
                return invalid, await web.post("/members")

    invalid, response = run(go())
    assert str(invalid).startswith("name: "), (
        f"Tortoise's ValidationError text is {invalid}, not '<field>: <why>': "
        "tortoise_neon/asgi.py _invalid_for_the_model splits it")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "name"], response.text
    assert explain_error(invalid).endswith(str(invalid)), explain_error(invalid)


def test_starlette_sends_a_failed_startup_while_handling_the_error() -> None:
    """asgi.py ``OneLineStartupErrors`` reads the start-up error with ``sys.exc_info()`` inside
    ``send``: Starlette's router sends ``lifespan.startup.failed`` from its ``except`` block.
    Run by uvicorn's own lifespan handling, as ``uvicorn app:app`` runs it."""
    import sys

    from tortoise_neon.asgi import OneLineStartupErrors
    from tortoise_neon.errors import DatabaseError

    import uvicorn
    from fastapi import FastAPI
    from uvicorn.lifespan.on import LifespanOn

    down = DatabaseError("the database is down for this test")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise down
        yield  # pragma: no cover

    app = FastAPI(lifespan=lifespan)
    seen: list[BaseException | None] = []

    async def recording(scope, receive, send):  # type: ignore[no-untyped-def]
        async def send_recording(message):  # type: ignore[no-untyped-def]
            if message["type"] == "lifespan.startup.failed":
                seen.append(sys.exc_info()[1])
            await send(message)

        await app(scope, receive, send_recording)

    async def start() -> LifespanOn:
        config = uvicorn.Config(OneLineStartupErrors(recording), lifespan="on",
                                log_config=None)  # uvicorn's logging config drops our handler
        config.load()
        lifespan_on = LifespanOn(config)
        await lifespan_on.startup()
        return lifespan_on

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logged: list[str] = []
    handler = Lines()
    logging.getLogger("uvicorn.error").addHandler(handler)  # uvicorn's loggers do not propagate
    try:
        started = run(start())
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert started.startup_failed
    assert seen and seen[0] is down, (
        f"Starlette no longer sends lifespan.startup.failed while handling the error "
        f"(sys.exc_info() there: {seen}): tortoise_neon/asgi.py OneLineStartupErrors reads it")
    assert f"Error: {down}" in logged and not any("Traceback" in line for line in logged), logged
