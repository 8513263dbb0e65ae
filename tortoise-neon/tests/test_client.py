"""The client's transactions when their connection is lost (tortoise_neon/client.py): the error
says nothing was saved, never the driver's ``InterfaceError`` from a rollback on a closed
connection, and the next statement runs on a new connection."""

from __future__ import annotations

from dataclasses import replace

import tortoise_neon
from tortoise_neon.client import NotSaved
from tortoise_neon.testing.fixtures import Postgres, migrate_database, project_config, query, run

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from tests.project.members import Member


async def tortoise_on(pg: Postgres, db_url: str) -> None:
    settings = tortoise_neon.parse_database_url(db_url)
    if pg.server and pg.server.ca_path:
        settings = replace(settings, sslrootcert=str(pg.server.ca_path))
    await Tortoise.init(config=project_config(settings))


async def end_backend(pg: Postgres, dbname: str, backend: int) -> None:
    admin = await pg.admin(dbname)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", backend)
    finally:
        await admin.close()


def test_a_transaction_whose_connection_is_lost_is_not_saved(pg: Postgres, dbname: str,
                                                            db_url: str) -> None:
    migrate_database(pg, dbname)

    async def go() -> None:
        await tortoise_on(pg, db_url)
        try:
            with pytest.raises(NotSaved) as raised:
                async with in_transaction() as connection:
                    await Member.create(name="Ada", using_db=connection)
                    backend = (await connection.execute_query_dict(
                        "SELECT pg_backend_pid() AS pid"))[0]["pid"]
                    await end_backend(pg, dbname, backend)  # the compute restarts here
                    await Member.create(name="Grace", using_db=connection)
            assert "Lost the connection to the database" in str(raised.value)
            await Member.create(name="Linus")  # the pool hands out a new connection
        finally:
            await Tortoise.close_connections()

    run(go())
    names = [row["name"] for row in query(pg, dbname, "SELECT name FROM library_members")]
    assert names == ["Linus"]  # nothing of the lost transaction
