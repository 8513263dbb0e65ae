"""Connection slots a process holds (tortoise_neon/config.py, pool.py, connect_errors.py), on real servers:
idle connections on a direct string go back after ``config.IDLE_TIMEOUT``; on the pooled string
they stay (reopening one would cost round trips); the out-of-slots lines name the fix that
exists for the host, Neon's pooled string only for Neon hosts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path

import tortoise_neon
from tortoise_neon import config
from tortoise_neon.testing import hostnames, servers
from tortoise_neon.testing.apps import app_database
from tortoise_neon.testing.fixtures import (
    Postgres,
    missing,
    neon_url,
    project_config,
    run,
)
from tortoise_neon.testing.neon_proxy import NeonProxy, in_front_of

import pytest
from tortoise import Tortoise

LOCK = 29_029  # an advisory lock the admin holds while the app's statements wait for it


async def app_connections(admin: object, dbname: str, user: str | None) -> int:
    """Connections of the app's role to ``dbname``, as the server counts them, but the one
    asking (against TEST_DATABASE_URL's server, it is of the same role)."""
    return int(await admin.fetchval(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2 "
        "AND pid <> pg_backend_pid()", dbname, user))


async def poll(check: object, deadline: float = 60) -> bool:
    """True once ``check()`` (a coroutine function) is true; False after ``deadline`` s."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if await check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


def test_idle_connections_on_a_direct_string_go_back_after_the_bound(
        pg: Postgres, dbname: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst opens the pool's 5 connections (each statement waits on a lock the admin holds,
    so all 5 are open at once); once idle, the pool closes every one (2 s here, the setting's
    default 10 s) and opens none again: the server counts 0 of the app's connections."""
    monkeypatch.setattr(config, "IDLE_TIMEOUT", 2.0)
    settings = tortoise_neon.parse_database_url(db_url)
    if pg.server and pg.server.ca_path:
        settings = replace(settings, sslrootcert=str(pg.server.ca_path))
    assert not settings.pooled

    async def go() -> tuple[bool, bool]:
        admin = await pg.admin(dbname)
        await Tortoise.init(config=project_config(settings))
        try:
            await admin.execute(f"SELECT pg_advisory_lock({LOCK})")
            app = Tortoise.get_connection("default")
            burst = [asyncio.ensure_future(app.execute_query(
                f"SELECT pg_advisory_xact_lock_shared({LOCK})")) for _ in range(5)]

            async def all_open() -> bool:
                return await app_connections(admin, dbname, settings.user) == 5

            opened = await poll(all_open)
            await admin.execute(f"SELECT pg_advisory_unlock({LOCK})")
            await asyncio.gather(*burst)

            async def none_left() -> bool:
                return await app_connections(admin, dbname, settings.user) == 0

            return opened, await poll(none_left)
        finally:
            await Tortoise.close_connections()
            await admin.close()

    opened, given_back = run(go())
    assert opened, "the burst did not open 5 connections: the test proves nothing"
    assert given_back, "idle connections were still open 60 s after the burst (bound: 2 s)"


def test_idle_connections_on_the_pooled_string_stay(
        neon: NeonProxy, pg: Postgres, local_pg: servers.PostgresServer, dbname: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On Neon's pooler a connection holds no compute slot: one idle for longer than the direct
    string's bound still serves the next statement, so no connection is opened for it."""
    monkeypatch.setattr(config, "IDLE_TIMEOUT", 0.5)
    settings = tortoise_neon.parse_database_url(neon_url(neon, dbname))
    settings = replace(settings, sslrootcert=str(local_pg.ca_path))
    assert settings.pooled and config.idle_timeout(settings) == config.POOLED_IDLE_TIMEOUT
    endpoint = neon.endpoints[hostnames.ENDPOINT]

    async def go() -> tuple[int, int]:
        await Tortoise.init(config=project_config(settings))
        try:
            app = Tortoise.get_connection("default")
            await app.execute_query("SELECT 1")
            opened = endpoint.attempts
            await asyncio.sleep(2.0)  # 4 x the direct string's bound, idle
            await app.execute_query("SELECT 1")
            return opened, endpoint.attempts
        finally:
            await Tortoise.close_connections()

    before, after = run(go())
    assert before >= 1
    assert after == before, "the pooled string's idle connection was closed and opened again"


# --- the out-of-slots lines -----------------------------------------------------------------

NEON_FIX = "use the pooled connection string (the -pooler host), or lower pool_size in DATABASE_URL"
PLAIN_FIX = ("put a pooler such as PgBouncer in front of the server, lower pool_size in "
             "DATABASE_URL, or raise the server's max_connections, so that processes x pool_size "
             "fits max_connections (see docs/replicas-and-workers.md)")


@pytest.mark.parametrize("host", ["plain", "neon"])
def test_the_warning_of_a_full_server_names_the_fix_that_exists_there(
        host: str, few_slots: Postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A process holds one connection; every other slot of the app's role is taken; two
    statements at once: the second finds the server full, and the pool says so once, with the
    fix that exists there (Neon's pooled string only on a Neon host), while it waits for the
    connection it holds. Both statements succeed."""
    server = few_slots.server
    assert server is not None
    name = app_database(server)
    with contextlib.ExitStack() as stack:
        url = few_slots.url(name)
        if host == "neon":
            reason = hostnames.ensure()
            if reason:
                missing(reason)
            proxy = stack.enter_context(in_front_of(server, tmp_path))
            url = neon_url(proxy, name, host=hostnames.DIRECT)
        settings = tortoise_neon.parse_database_url(url)
        if server.ca_path:
            settings = replace(settings, sslrootcert=str(server.ca_path))

        async def go() -> None:
            await Tortoise.init(config=project_config(settings))
            try:
                app = Tortoise.get_connection("default")
                await app.execute_query("SELECT 1")  # the connection this process holds
                with servers.every_slot_taken(server, name) as taken:
                    assert taken == 6  # the app's role has 7: the process holds one
                    await asyncio.gather(*(app.execute_query("SELECT pg_sleep(0.5)")
                                           for _ in range(2)))
            finally:
                await Tortoise.close_connections()

        with caplog.at_level(logging.WARNING, logger="tortoise_neon.pool"):
            run(go())
    lines = [r.getMessage() for r in caplog.records if "no free connection slot" in r.getMessage()]
    assert len(lines) == 1, lines
    line = lines[0]
    where = hostnames.DIRECT if host == "neon" else "127.0.0.1"
    assert line.startswith(f"The database has no free connection slot (DATABASE_URL at {where}: "
                           ), line
    assert "this process goes on with the 1 connection it holds; " in line, line
    if host == "neon":
        assert NEON_FIX in line and "PgBouncer" not in line, line
    else:
        assert line.endswith(PLAIN_FIX) and "-pooler" not in line, line
