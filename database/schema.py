"""The schema: create the quickstart's tables safely, or check that migrations created them."""

from __future__ import annotations

from tortoise import Tortoise, connections
from tortoise.utils import get_schema_sql

SCHEMA_LOCK_ID = 7_245_019_388  # pg_advisory_xact_lock key: one schema creation at a time


async def create_schema() -> None:
    """Create the tables that do not exist yet, one process at a time (the quickstart's way).

    On PostgreSQL it is a single message (one round trip): a transaction-scoped advisory lock,
    then the DDL, so that several processes starting at once (also through PgBouncer in
    transaction mode) never race on CREATE TABLE IF NOT EXISTS. It never alters a table that
    exists: a model that changes needs migrations (``tortoise makemigrations``).
    """
    client = connections.get("default")
    if client.capabilities.dialect != "postgres":
        await Tortoise.generate_schemas(safe=True)
        return
    ddl = get_schema_sql(client, safe=True)
    # Several statements in one message run as one transaction: the lock is held to its end.
    await client.execute_script(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID});\n{ddl}")


async def check_schema() -> None:
    """Check that every model's table and columns exist (an app's way: migrations made them).

    One message, one round trip: ``SELECT <columns> FROM <table> LIMIT 0`` for each model. A
    missing table or column raises the driver's error, which ``explain_error`` turns into the
    line that names the fix (``tortoise makemigrations`` then ``tortoise migrate``).
    """
    client = connections.get("default")
    checks = []
    for app in Tortoise.apps.values():
        for model in app.values():
            meta = model._meta
            columns = ", ".join(f'"{c}"' for c in meta.fields_db_projection.values())
            checks.append(f'SELECT {columns} FROM "{meta.db_table}" LIMIT 0;')
    await client.execute_script("\n".join(checks))
