"""app.py served by uvicorn, as the README runs it, against the test PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import database
from database.testing import servers
from database.testing.fixtures import ROOT, Postgres, execute, query, run, script_env
from database.testing.servers import free_port

import httpx
import pytest
from tortoise import Tortoise

NAME_RULE = "the name must be 1 to 50 characters"


def start_uvicorn(env: dict[str, str], log: Path, cwd: Path = ROOT,
                  ) -> tuple[subprocess.Popen[bytes], int]:
    """`uvicorn app:app --port PORT`, as the README runs it."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
            env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    return server, port


def create_tables(pg: Postgres, db_url: str) -> None:
    """The schema, from the migrations (as `python main.py` applies them, without a row)."""

    async def go() -> None:
        settings = database.parse_database_url(db_url)
        if pg.server and pg.server.ca_path:
            settings.sslrootcert = str(pg.server.ca_path)
        config = database.tortoise_config(settings)
        await Tortoise.init(config=config)
        try:
            await database.migrate(config["apps"])
        finally:
            await Tortoise.close_connections()

    run(go())


@contextmanager
def app_running(env: dict[str, str], log: Path, cwd: Path = ROOT,
                timeout: float = 30) -> Iterator[httpx.Client]:
    """uvicorn with the app (``start_uvicorn``), a client once it answers; stopped after."""
    server, port = start_uvicorn(env, log, cwd)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            wait_until_up(client, server, log)
            yield client
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def api(pg: Postgres, db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """The app on a free port, on a database whose tables exist; stopped after the test."""
    create_tables(pg, db_url)
    log = tmp_path / "uvicorn.log"
    with app_running(script_env(pg, db_url), log) as client:
        yield client
    assert "Application shutdown complete." in log.read_text()  # the lifespan closed the pool


def wait_until_up(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"uvicorn exited with {server.returncode}:\n{log.read_text()}")
        try:
            client.get("/health").raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"the app did not answer /health within 60 s:\n{log.read_text()}")


def names(pg: Postgres, dbname: str) -> list[str]:
    return [r["name"] for r in query(pg, dbname, "SELECT name FROM demo_users ORDER BY id")]


def test_create_and_list_users_newest_first(api: httpx.Client, pg: Postgres, dbname: str) -> None:
    created = api.post("/users", json={"name": "Ada"})
    assert created.status_code == 201, created.text
    ada = created.json()
    assert ada["name"] == "Ada" and isinstance(ada["id"], int) and ada["created_at"]
    assert api.post("/users", json={"name": "  Grace  "}).json()["name"] == "Grace"

    listed = api.get("/users")
    assert listed.status_code == 200
    assert [u["name"] for u in listed.json()] == ["Grace", "Ada"]
    assert listed.json()[1] == ada
    assert [u["name"] for u in api.get("/users", params={"limit": 1}).json()] == ["Grace"]
    assert names(pg, dbname) == ["Ada", "Grace"]


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "   "}, {"name": "x" * 51}])
def test_invalid_names_are_rejected_with_a_clear_message(
    api: httpx.Client, pg: Postgres, dbname: str, body: dict[str, str]
) -> None:
    response = api.post("/users", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "name"] and NAME_RULE in error["msg"]
    assert api.post("/users", json={"name": "x" * 50}).status_code == 201  # the longest allowed
    assert names(pg, dbname) == ["x" * 50]


def test_list_is_bounded(api: httpx.Client) -> None:
    for i in range(12):
        assert api.post("/users", json={"name": f"User {i}"}).status_code == 201
    assert [u["name"] for u in api.get("/users").json()] == [f"User {i}" for i in range(11, 1, -1)]
    assert len(api.get("/users", params={"limit": 100}).json()) == 12
    for limit in (0, 101):
        response = api.get("/users", params={"limit": limit})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
            "query", "limit"]


def test_health_db_touches_the_database(api: httpx.Client, pg: Postgres, dbname: str,
                                        tmp_path: Path) -> None:
    assert api.get("/health/db").json() == {"status": "ok"}
    # the app's connections are terminated, and cannot reconnect
    execute(pg, None, f'DROP DATABASE "{dbname}" WITH (FORCE)')
    response = api.get("/health/db")
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert response.json() == {"detail": "the database is not answering: try again"}  # no host
    assert api.get("/health").json() == {"status": "ok"}  # the app itself is up
    created = api.post("/users", json={"name": "Ada"})
    assert created.status_code == 503  # never reached the database: nothing saved
    assert created.json()["may_have_been_saved"] is False
    log = (tmp_path / "uvicorn.log").read_text()
    assert log.count(f"ERROR:    Error: Database {dbname} does not exist") == 2, log  # one each
    assert "Traceback" not in log


def test_app_reconnects_after_the_server_restarts(api: httpx.Client, pg: Postgres,
                                                  local_pg: servers.PostgresServer) -> None:
    """A Neon compute suspended and woken up: the pool's idle connections are terminated
    ("terminating connection due to administrator command"); the next request gets a new one."""
    assert api.post("/users", json={"name": "before"}).status_code == 201
    local_pg.stop()
    # The request arrives while the server is down; the server is back 2 s later (cold start).
    waking = threading.Timer(2.0, local_pg.start)
    waking.start()
    try:
        after = api.post("/users", json={"name": "after"})
    finally:
        waking.join()
    assert after.status_code == 201, after.text
    assert [u["name"] for u in api.get("/users").json()] == ["after", "before"]
    assert api.get("/health").json() == {"status": "ok"}


def startup_failure(env: dict[str, str], tmp_path: Path) -> list[str]:
    """Start the app and expect it to exit at start-up; the lines it printed."""
    log = tmp_path / "uvicorn.log"
    server, _ = start_uvicorn(env, log)
    try:
        code = server.wait(90)
    finally:
        if server.poll() is None:
            server.kill()
    output = log.read_text()
    assert code != 0, output
    assert "Traceback" not in output and servers.APP_PASSWORD not in output, output
    assert "Application startup failed. Exiting." in output
    return [line for line in output.splitlines() if line.startswith("ERROR:")]


def test_startup_with_a_wrong_password_is_one_line(pg: Postgres, dbname: str,
                                                   tmp_path: Path) -> None:
    env = script_env(pg, pg.url(dbname, password="Wrong-Password-42"))
    errors = startup_failure(env, tmp_path)
    assert len(errors) == 2, errors  # the line, then uvicorn's "Application startup failed"
    assert errors[0].startswith("ERROR:    Error: Password authentication failed for user")
    assert "Wrong-Password-42" not in errors[0]


def test_startup_without_the_tables_names_the_fix(pg: Postgres, db_url: str,
                                                  tmp_path: Path) -> None:
    errors = startup_failure(script_env(pg, db_url), tmp_path)
    assert len(errors) == 2, errors
    assert errors[0].startswith('ERROR:    Error: The database has no table for a model '
                                '(relation "demo_users" does not exist): run `tortoise')
    assert "tortoise makemigrations` then `tortoise migrate`" in errors[0]


def test_startup_with_a_column_missing_names_its_table(pg: Postgres, dbname: str, db_url: str,
                                                       tmp_path: Path) -> None:
    create_tables(pg, db_url)
    execute(pg, dbname, "ALTER TABLE demo_users DROP COLUMN created_at")
    errors = startup_failure(script_env(pg, db_url), tmp_path)
    assert errors[0] == (
        'ERROR:    Error: The database schema is behind the models (column "created_at" of '
        'relation "demo_users" does not exist): run `tortoise makemigrations` then '
        '`tortoise migrate`')
