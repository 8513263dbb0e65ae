"""The library project's app (``uvicorn web:app``) against the test PostgreSQL: what the package
gives every app, whatever its models and endpoints: ``/health/db`` and 503s when the database
does not answer, a new connection after a server restart, one-line start-up errors."""

from __future__ import annotations

import threading
from pathlib import Path

from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import create_tables, startup_failure
from tortoise_neon.testing.fixtures import Postgres, execute, script_env

import httpx


def test_health_db_touches_the_database(api: httpx.Client, pg: Postgres, dbname: str,
                                        tmp_path: Path) -> None:
    assert api.get("/health/db").json() == {"status": "ok"}
    # the app's connections are terminated, and cannot reconnect
    execute(pg, None, f'DROP DATABASE "{dbname}" WITH (FORCE)')
    response = api.get("/health/db")
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert response.json() == {"detail": "the database is not answering: try again"}  # no host
    assert api.get("/health").json() == {"status": "ok"}  # the app itself is up
    created = api.post("/members", json={"name": "Ada"})
    assert created.status_code == 503  # never reached the database: nothing saved
    assert created.json()["may_have_been_saved"] is False
    log = (tmp_path / "uvicorn.log").read_text()
    assert log.count(f"ERROR:    Error: Database {dbname} does not exist") == 2, log  # one each
    assert "Traceback" not in log


def test_app_reconnects_after_the_server_restarts(api: httpx.Client, pg: Postgres,
                                                  local_pg: servers.PostgresServer) -> None:
    """A Neon compute suspended and woken up: the pool's idle connections are terminated
    ("terminating connection due to administrator command"); the next request gets a new one."""
    assert api.post("/members", json={"name": "before"}).status_code == 201
    local_pg.stop()
    # The request arrives while the server is down; the server is back 2 s later (cold start).
    waking = threading.Timer(2.0, local_pg.start)
    waking.start()
    try:
        after = api.post("/members", json={"name": "after"})
    finally:
        waking.join()
    assert after.status_code == 201, after.text
    assert [m["name"] for m in api.get("/members").json()] == ["after", "before"]
    assert api.get("/health").json() == {"status": "ok"}


def test_startup_with_a_wrong_password_is_one_line(pg: Postgres, dbname: str,
                                                   tmp_path: Path) -> None:
    env = script_env(pg, pg.url(dbname, password="Wrong-Password-42"))
    errors = startup_failure(env, tmp_path / "uvicorn.log")
    assert len(errors) == 2, errors  # the line, then uvicorn's "Application startup failed"
    assert errors[0].startswith("ERROR:    Error: Password authentication failed for user")
    assert "Wrong-Password-42" not in errors[0]


def test_startup_without_the_tables_names_the_fix(pg: Postgres, db_url: str,
                                                  tmp_path: Path) -> None:
    errors = startup_failure(script_env(pg, db_url), tmp_path / "uvicorn.log")
    assert len(errors) == 2, errors
    assert errors[0].startswith('ERROR:    Error: The database has no table for a model '
                                '(relation "library_members" does not exist): run `tortoise')
    assert "tortoise makemigrations` then `tortoise migrate`" in errors[0]


def test_startup_with_a_column_missing_names_its_table(pg: Postgres, dbname: str, db_url: str,
                                                       tmp_path: Path) -> None:
    create_tables(pg, db_url)
    execute(pg, dbname, "ALTER TABLE library_members DROP COLUMN joined_at")
    errors = startup_failure(script_env(pg, db_url), tmp_path / "uvicorn.log")
    assert errors[0] == (
        'ERROR:    Error: The database schema is behind the models (column "joined_at" of '
        'relation "library_members" does not exist): run `tortoise makemigrations` then '
        '`tortoise migrate`')
