"""Neon in production conditions, against real servers: pooled endpoint (PgBouncer in
transaction mode), cold start, concurrent first runs, interrupts, a server restart."""

from __future__ import annotations

import asyncio
import select
import signal
import subprocess
import time
from pathlib import Path

import tortoise_neon
from tortoise_neon.testing import pglog, servers
from tortoise_neon.testing.fixtures import (
    Postgres,
    execute,
    migrate_database,
    query,
    run_script,
    script_env,
    start_script,
)

import pytest

# A pooler without prepared statements, as a "-pooler" host outside Neon gets it (see
# test_database_url.py): the test PgBouncer listens on 127.0.0.1, so the URL says it explicitly.
POOLER_QUERY = "sslmode=require&channel_binding=require&statement_cache_size=0"


def pooler_url(local_pg: servers.PostgresServer, bouncer: servers.PgBouncer, dbname: str) -> str:
    query_string = POOLER_QUERY if local_pg.tls else "sslmode=disable&statement_cache_size=0"
    return local_pg.url(dbname, port=bouncer.port, query=query_string)


def test_pooler_detection_gives_the_settings_used_below() -> None:
    neon = "postgresql://u:p@ep-x-123-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require"
    creds = tortoise_neon.tortoise_config(tortoise_neon.parse_database_url(neon))["connections"]["default"]
    assert creds["credentials"]["statement_cache_size"] == 100  # PgBouncer 1.21+, as Neon's


def run_many(script: str, count: int, env: dict[str, str], cwd: Path
             ) -> list[subprocess.CompletedProcess[str]]:
    procs = [start_script(script, "--name", f"worker {i}", env=env, cwd=cwd)
             for i in range(count)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_both_scripts_through_pgbouncer(pg: Postgres, local_pg: servers.PostgresServer,
                                        pgbouncer: servers.PgBouncer, dbname: str,
                                        tmp_path: Path) -> None:
    env = script_env(pg, pooler_url(local_pg, pgbouncer, dbname))
    for script in ("ledger.py", "members.py", "members.py"):
        result = run_script(script, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "statement cache off" in result.stdout
    assert query(pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 3


def test_twelve_concurrent_runs_through_pgbouncer(pg: Postgres, local_pg: servers.PostgresServer,
                                                  pgbouncer: servers.PgBouncer, dbname: str,
                                                  tmp_path: Path) -> None:
    env = script_env(pg, pooler_url(local_pg, pgbouncer, dbname))
    results = run_many("members.py", 12, env, tmp_path)
    failures = [r.stderr for r in results if r.returncode != 0]
    assert failures == []  # the guide's script: 11 of 12 failed ("prepared statement ... exists")
    assert query(pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 12


def test_cold_start_server_appears_after_two_seconds(pg: Postgres,
                                                     local_pg: servers.PostgresServer,
                                                     dbname: str, tmp_path: Path) -> None:
    """A local server still starting: refused at first, listening within the 5 s that refusals
    are retried for. One line says the script waits; then it runs as usual."""
    local_pg.stop()
    try:
        proc = start_script("members.py", env=script_env(pg, pg.url(dbname)), cwd=tmp_path)
        # its "not ready" line, however busy the machine: the script met the refusal first
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        first = proc.stderr.readline() if ready else ""
        assert proc.poll() is None, first  # still waiting, not failed
    finally:
        local_pg.start()
    out, rest = proc.communicate(timeout=60)
    err = first + rest
    assert proc.returncode == 0, err
    waiting = f"Database at {local_pg.host}:{local_pg.port} not ready (connection refused)"
    assert len(err.splitlines()) == 1 and err.startswith(f"{waiting}; retrying for up to ")
    assert "Added member #1" in out


async def hold_schema_lock(pg: Postgres, dbname: str, waiters: int) -> int:
    """Hold the schema lock until ``waiters`` sessions queue behind it, then let them all go;
    how many queued."""
    conn = await pg.admin(dbname)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", tortoise_neon.SCHEMA_LOCK_ID)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            if waiting >= waiters:
                break
            await asyncio.sleep(0.1)
        return int(waiting)
    finally:
        await conn.close()  # releases the lock: all of them create the schema at once


def concurrent_first_runs(pg: Postgres, dbname: str, url: str, tmp_path: Path) -> None:
    procs = [start_script("members.py", "--name", f"first run {i}", env=script_env(pg, url),
                          cwd=tmp_path) for i in range(20)]
    waiting = 0
    try:
        waiting = asyncio.run(hold_schema_lock(pg, dbname, waiters=20))
    finally:
        outcomes = [(proc.wait(timeout=180), proc.stderr.read()) for proc in procs]  # type: ignore[union-attr]
        for proc in procs:
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
    assert [err for code, err in outcomes if code != 0] == []  # 20 of 20 succeeded
    assert waiting == 20, f"only {waiting} of 20 runs reached schema creation"
    assert query(pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 20


def test_twenty_concurrent_first_runs(pg: Postgres, dbname: str, db_url: str,
                                      tmp_path: Path) -> None:
    concurrent_first_runs(pg, dbname, db_url, tmp_path)


def test_twenty_concurrent_first_runs_through_pgbouncer(pg: Postgres,
                                                        local_pg: servers.PostgresServer,
                                                        pgbouncer: servers.PgBouncer,
                                                        dbname: str, tmp_path: Path) -> None:
    concurrent_first_runs(pg, dbname, pooler_url(local_pg, pgbouncer, dbname), tmp_path)


def make_inserts_slow(pg: Postgres, dbname: str, name_prefix: str) -> None:
    """After inserting a row whose name starts with ``name_prefix``, sleep inside the statement:
    the script is then stuck inside its transaction with the row written but not committed.
    The table comes from the migrations, as `tortoise migrate` applies them."""
    migrate_database(pg, dbname)
    execute(pg, dbname, """
        CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
    """)
    execute(pg, dbname, f"CREATE TRIGGER slow AFTER INSERT ON library_members FOR EACH ROW "
                      f"WHEN (NEW.name LIKE '{name_prefix}%') EXECUTE FUNCTION slow_insert()")


def wait_for_sleeping_insert(pg: Postgres, dbname: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if query(pg, dbname, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                             "AND query LIKE 'INSERT%' AND state = 'active'", dbname)[0][0]:
            return
        time.sleep(0.1)
    raise AssertionError("the script never reached its slow INSERT")


def backends(pg: Postgres, dbname: str) -> int:
    return query(pg, dbname, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                             "AND pid <> pg_backend_pid()", dbname)[0][0]


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "Interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "Interrupted (SIGTERM)"),
])
def test_interrupt_inside_the_transaction_rolls_it_back(pg: Postgres, dbname: str, db_url: str,
                                                        tmp_path: Path, signum: int, code: int,
                                                        said: str) -> None:
    make_inserts_slow(pg, dbname, "kept")
    if pg.server:  # the server logs each statement in this database: the ROLLBACK must be there
        execute(pg, dbname, f"ALTER DATABASE {dbname} SET log_statement = 'all'")
        log_offset = pglog.log_size(pg.server.logfile)
    proc = start_script("ledger.py", env=script_env(pg, db_url), cwd=tmp_path)
    wait_for_sleeping_insert(pg, dbname, proc)  # inside block 2, "kept ..." written, not committed
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [
        f"{said}: stopped cleanly; nothing unfinished was saved."]
    assert "Traceback" not in err and "Task was destroyed" not in err
    assert query(pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 0
    if pg.server:
        (session,) = pglog.sessions_of(pg.server.logfile, log_offset, dbname, servers.APP_USER)
        assert session.statements[-1].startswith("statement: ROLLBACK"), session.statements
        assert session.disconnected
        assert not any("unexpected EOF" in problem for problem in session.problems)
    deadline = time.monotonic() + 5
    while backends(pg, dbname) and time.monotonic() < deadline:  # the server notices at once
        time.sleep(0.05)
    assert backends(pg, dbname) == 0


def test_server_restart_mid_run_is_one_clear_line(pg: Postgres, local_pg: servers.PostgresServer,
                                                  dbname: str, db_url: str,
                                                  tmp_path: Path) -> None:
    make_inserts_slow(pg, dbname, "Member")
    proc = start_script("members.py", env=script_env(pg, db_url), cwd=tmp_path)
    wait_for_sleeping_insert(pg, dbname, proc)
    started = time.monotonic()
    local_pg.stop()
    local_pg.start()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 30  # never a hang
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Lost the connection to the database")
    assert "Traceback" not in err
