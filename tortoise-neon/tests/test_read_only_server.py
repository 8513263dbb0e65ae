"""DATABASE_URL naming a read-only server (a hot standby, or a Neon read replica's string pasted
into the wrong variable), on a real hot standby of the test server: one line that says the server
is read-only, that DATABASE_URL needs the primary's string and that replicas go in
DATABASE_URL_REPLICA: for a script, ``tortoise migrate`` and the app's start-up."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import tortoise_neon
from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import create_tables, start_uvicorn
from tortoise_neon.testing.fixtures import (
    Postgres,
    project_config,
    query,
    replayed,
    run,
    run_script,
    script_env,
)

from tortoise import Tortoise
from tortoise.exceptions import BaseORMException

from tests.project import library_project
from tests.project.members import Member


def read_only_line(variable: str, why: str) -> str:
    return (f"Error: The server in {variable} is read-only, a read replica or hot standby "
            f"({why}): {variable} needs the primary's connection string (on Neon, the branch's "
            "read-write compute, not a read replica's); replicas go in DATABASE_URL_REPLICA")


CREATE = "cannot execute CREATE TABLE in a read-only transaction"
CHECK = "transaction_read_only is on: the app's writes would fail"


def startup_errors(env: dict[str, str], cwd: Path, log: Path) -> list[str]:
    """``uvicorn web:app`` in ``cwd``, expected to fail at start-up: its ERROR lines."""
    server, _ = start_uvicorn(env, log, cwd=cwd)
    try:
        code = server.wait(90)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
    output = log.read_text()
    assert code != 0, output
    assert "Traceback" not in output and servers.APP_PASSWORD not in output, output
    return [line for line in output.splitlines() if line.startswith("ERROR:")]


def test_a_script_and_migrate_on_a_read_replica_are_one_line(
        pg: Postgres, dbname: str, replica_url: str, tmp_path: Path) -> None:
    library_project(tmp_path)
    env = script_env(pg, replica_url)
    script = run_script("members.py", env=env, cwd=tmp_path)
    assert (script.returncode, script.stderr.splitlines()) == (
        1, [read_only_line("DATABASE_URL", CREATE)]), script.stdout
    migrate = [sys.executable, "-m", "tortoise", "migrate"]
    migrated = subprocess.run(migrate, env=env, cwd=tmp_path, text=True, capture_output=True,
                              timeout=120, check=False)
    assert (migrated.returncode, migrated.stderr.splitlines()) == (
        1, [read_only_line("DATABASE_URL", CREATE)]), migrated.stdout
    # The CLI on DATABASE_URL_UNPOOLED (the primary in DATABASE_URL): the line names that one.
    env = script_env(pg, pg.url(dbname), DATABASE_URL_UNPOOLED=replica_url)
    migrated = subprocess.run(migrate, env=env, cwd=tmp_path, text=True, capture_output=True,
                              timeout=120, check=False)
    assert migrated.stderr.splitlines() == [read_only_line("DATABASE_URL_UNPOOLED", CREATE)]
    assert query(pg, dbname, "SELECT to_regclass('library_members') AS t")[0]["t"] is None


def test_the_app_refuses_to_start_on_a_read_replica(
        pg: Postgres, dbname: str, db_url: str, standby: servers.PostgresServer,
        replica_url: str, tmp_path: Path) -> None:
    """Without the tables, the read-only line comes first (migrating there would fail too);
    with them (migrated on the primary, replayed), the app still does not start on a server
    where its first write would fail."""
    library_project(tmp_path)
    env = script_env(pg, replica_url)
    errors = startup_errors(env, tmp_path, tmp_path / "uvicorn.log")
    assert errors == [f"ERROR:    {read_only_line('DATABASE_URL', CHECK)}",
                      "ERROR:    Application startup failed. Exiting."]
    create_tables(pg, db_url)
    replayed(pg, standby)
    errors = startup_errors(env, tmp_path, tmp_path / "uvicorn2.log")
    assert errors[0] == f"ERROR:    {read_only_line('DATABASE_URL', CHECK)}"


def test_the_app_starts_on_the_primary_with_the_check(
        pg: Postgres, db_url: str, tmp_path: Path) -> None:
    """The check costs the primary nothing: the app starts there (and with the replica in
    DATABASE_URL_REPLICA, where it belongs)."""
    create_tables(pg, db_url)
    library_project(tmp_path)
    log = tmp_path / "uvicorn.log"
    server, _ = start_uvicorn(script_env(pg, db_url), log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "Application startup complete." not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(30)
    assert "ERROR" not in log.read_text()


def test_a_write_tortoise_wraps_is_explained_by_its_sqlstate(
        pg: Postgres, dbname: str, db_url: str, standby: servers.PostgresServer) -> None:
    """Tortoise wraps the driver's 25006 in its own exception (TransactionManagementError):
    the line is found through the cause chain."""
    create_tables(pg, db_url)
    replayed(pg, standby)
    settings = tortoise_neon.parse_database_url(standby.url(dbname))
    if pg.server and pg.server.ca_path:
        settings = replace(settings, sslrootcert=str(pg.server.ca_path))

    async def write() -> BaseException:
        await Tortoise.init(config=project_config(settings))
        try:
            await Member.create(name="nowhere")
        except Exception as exc:  # noqa: BLE001 - the one under test
            return exc
        finally:
            await Tortoise.close_connections()
        raise AssertionError("the standby took a write")

    error = run(write())
    assert isinstance(error, BaseORMException), repr(error)
    assert tortoise_neon.explain_error(error) == read_only_line(
        "DATABASE_URL", "cannot execute INSERT in a read-only transaction").removeprefix("Error: ")
