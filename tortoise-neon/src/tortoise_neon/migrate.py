"""Apply the migrations in ``migrations/``, one process at a time, or check that they were
applied (docs/connecting.md)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tortoise_neon.error_chain import driver_error
from tortoise_neon.errors import MIGRATE, DatabaseError

import asyncpg
from tortoise import Tortoise, connections
from tortoise.exceptions import BaseORMException
from tortoise.migrations.autodetector import MigrationAutodetector
from tortoise.migrations.executor import MigrationExecutor
from tortoise.migrations.loader import MigrationLoader
from tortoise.migrations.recorder import MigrationRecorder
from tortoise.transactions import in_transaction
from tortoise.utils import get_schema_sql

SCHEMA_LOCK_ID = 7_245_019_388  # pg_advisory_xact_lock key: one schema change at a time
LOCK = f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID})"

# check_schema's first statement on PostgreSQL: a read-only server fails as a write would (25006).
READ_ONLY_CHECK = """DO $$ BEGIN
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction',
      MESSAGE = 'transaction_read_only is on: the app''s writes would fail';
  END IF;
END $$;"""


async def migrate(apps: Mapping[str, dict[str, Any]]) -> None:
    """Apply the migrations of ``apps`` (the config's) not applied yet, as ``tortoise migrate``
    does, under an advisory lock; one message when up to date. No migrations: create_schema()."""
    client = connections.get("default")
    on_disk = _migrations_on_disk(apps)
    if not on_disk:
        await create_schema()
        return
    if client.capabilities.dialect != "postgres":
        await MigrationExecutor(client, dict(apps)).migrate()
        return
    tables = sorted({model._meta.db_table for _, _, model in _models(apps)})
    if await _applied_count(client, on_disk, tables) == len(on_disk):
        return
    async with in_transaction("default") as transaction:
        await transaction.execute_script(LOCK)
        await MigrationExecutor(transaction, dict(apps)).migrate()
    await _refuse_a_renamed_table(client, apps)


def _migrations_on_disk(apps: Mapping[str, dict[str, Any]]) -> list[tuple[str, str]]:
    loader = MigrationLoader(dict(apps), MigrationRecorder(None))
    try:
        loader.load_disk()
    except ModuleNotFoundError:  # no migrations/ package: the models' tables, as they are
        return []
    return sorted((key.app_label, key.name) for key in loader.disk_migrations)


async def _applied_count(client: Any, on_disk: list[tuple[str, str]],
                         tables: list[str] | None = None) -> int:
    """How many of ``on_disk`` the database has applied (counted only while every one of
    ``tables`` exists), in one message that takes the lock and creates the migrations table."""
    keys = ", ".join(f"({_literal(app)}, {_literal(name)})" for app, name in on_disk)
    present = "".join(f" AND to_regclass({_literal(quote_ident(table))}) IS NOT NULL"
                      for table in tables or [])
    async with client.acquire_connection() as connection:
        status = await connection.execute(
            f"{LOCK};\n{_recorder_table_sql(client)};\n"
            f"SELECT 1 FROM tortoise_migrations WHERE (app, name) IN ({keys}){present}")
    return int(status.split()[-1])  # the last statement's status: "SELECT <rows>"


def _models(labels: Iterable[str]) -> Iterator[tuple[str, str, Any]]:
    """The app label, name and class of each model Tortoise loaded for ``labels``."""
    apps = Tortoise.apps
    for label in labels:
        for name, model in (apps[label] if apps is not None and label in apps else {}).items():
            yield label, name, model


async def _refuse_a_renamed_table(client: Any, apps: Mapping[str, Any] | None = None) -> None:
    """Raise the line for a model whose ``Meta.table`` changed without a migration renaming its
    table: the migrations' state names the old one, and the database has only that one."""
    config = dict(apps if apps is not None else getattr(Tortoise.apps, "_config", {}) or {})
    try:
        detector = MigrationAutodetector(Tortoise.apps, config)
        await detector.loader.build_graph()
        state = await detector._project_state()
    except Exception:  # noqa: BLE001 - no migrations, or ones that do not load: no such line
        return
    for label, name, model in _models(config):
        recorded = state.models.get((label, model.__name__))
        new, old = model._meta.db_table, recorded.table if recorded else None
        if not old or old == new:
            continue
        [row] = await client.execute_query_dict(
            "SELECT to_regclass($1) IS NOT NULL AS old, to_regclass($2) IS NOT NULL AS new",
            [quote_ident(old), quote_ident(new)])
        if row["old"] and not row["new"]:
            raise DatabaseError(
                f'The model {name}\'s table is "{new}" (its Meta.table), but its rows are in '
                f'"{old}", the table its migrations made: write the migration that renames it, '
                f'tortoise_neon.rename_table("{name}", "{old}", "{new}") '
                "(docs/schema-changes.md), then run `tortoise migrate`") from None


def _recorder_table_sql(client: Any) -> str:
    """Tortoise's migrations table, as its executor creates it (``IF NOT EXISTS``)."""
    executor = MigrationExecutor(client, {})
    editor = executor._schema_editor(atomic=False)
    table = editor._get_model_sql_data(executor.recorder.model).table_sql
    return table.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1).rstrip().rstrip(";")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier for PostgreSQL and SQLite (ValueError for a NUL)."""
    if "\0" in name:
        raise ValueError(f"an SQL identifier cannot hold a NUL character: {name!r}")
    return '"' + name.replace('"', '""') + '"'


async def create_schema() -> None:
    """Create the tables that do not exist yet (models without migrations), under the lock:
    one message on PostgreSQL."""
    client = connections.get("default")
    if client.capabilities.dialect != "postgres":
        await Tortoise.generate_schemas(safe=True)
        return
    ddl = get_schema_sql(client, safe=True)
    await client.execute_script(f"{LOCK};\n{ddl}")


async def check_schema() -> None:
    """Check in one message that every model's table and columns exist and, on PostgreSQL,
    that the server takes writes; raise the error ``explain_error`` explains."""
    client = connections.get("default")
    checks = []
    for _, _, model in _models(Tortoise.apps):
        meta = model._meta
        columns = ", ".join(quote_ident(c) for c in meta.fields_db_projection.values())
        checks.append((meta.db_table, f"SELECT {columns} FROM {quote_ident(meta.db_table)} LIMIT 0;"))
    first = [READ_ONLY_CHECK] if client.capabilities.dialect == "postgres" else []
    try:
        await client.execute_script("\n".join([*first, *(sql for _, sql in checks)]))
    except Exception as exc:
        if isinstance(driver_error(exc), asyncpg.UndefinedTableError):
            await _refuse_a_renamed_table(client)  # a Meta.table change: both tables, the fix
        if not isinstance(driver_error(exc), asyncpg.UndefinedColumnError):
            raise
        # PostgreSQL's line names the column, not its table: find it (only on this failure).
        for table, sql in checks:
            try:
                await client.execute_script(sql)
            except (asyncpg.PostgresError, BaseORMException) as again:
                line = str(driver_error(again)).replace(
                    " does not exist", f' of relation "{table}" does not exist', 1)
                raise DatabaseError(
                    f"The database schema is behind the models ({line}): {MIGRATE}") from None
        raise
