"""An ASGI app under uvicorn, as the README runs it (``uvicorn app:app``), for the tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import database
from database.testing.fixtures import (
    Postgres,
    project,
    project_app,
    project_config,
    run,
    script_env,
)
from database.testing.servers import APP_PASSWORD, free_port

import httpx
from tortoise import Tortoise


def start_uvicorn(env: dict[str, str], log: Path, app: str | None = None,
                  cwd: Path | None = None, workers: int = 1) -> tuple[subprocess.Popen[bytes], int]:
    """`uvicorn APP --port PORT [--workers N]` in the project's folder (or ``cwd``); APP: the
    project's."""
    port = free_port()
    more = ["--workers", str(workers)] if workers > 1 else []
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app or project_app(), "--port", str(port), *more],
            env=env, cwd=cwd or project(), stdout=out, stderr=subprocess.STDOUT)
    return server, port


def create_tables(pg: Postgres, db_url: str) -> None:
    """The project's schema, from its migrations (as its scripts apply them), without a row."""

    async def go() -> None:
        settings = database.parse_database_url(db_url)
        if pg.server and pg.server.ca_path:
            settings.sslrootcert = str(pg.server.ca_path)
        config = project_config(settings)
        await Tortoise.init(config=config)
        try:
            await database.migrate(config["apps"])
        finally:
            await Tortoise.close_connections()

    run(go())


@contextmanager
def app_running(env: dict[str, str], log: Path, app: str | None = None,
                cwd: Path | None = None, timeout: float = 30, workers: int = 1
                ) -> Iterator[httpx.Client]:
    """uvicorn with the app (``start_uvicorn``), a client once it answers; stopped after."""
    server, port = start_uvicorn(env, log, app, cwd, workers)
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


def wait_until_up(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited with {server.returncode}:\n{log.read_text()}")
        try:
            client.get("/health").raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"the app did not answer /health within 60 s:\n{log.read_text()}")


@contextmanager
def serving(pg: Postgres, db_url: str, log: Path) -> Iterator[httpx.Client]:
    """The project's app on a database whose tables exist; stopped after, its lifespan closed."""
    create_tables(pg, db_url)
    with app_running(script_env(pg, db_url), log) as client:
        yield client
    assert "Application shutdown complete." in log.read_text()  # the lifespan closed the pool


def startup_failure(env: dict[str, str], log: Path) -> list[str]:
    """Start the project's app and expect it to exit at start-up; the ERROR lines it printed
    (no traceback, never the password)."""
    server, _ = start_uvicorn(env, log)
    try:
        code = server.wait(90)
    finally:
        if server.poll() is None:
            server.kill()
    output = log.read_text()
    assert code != 0, output
    assert "Traceback" not in output and APP_PASSWORD not in output, output
    assert "Application startup failed. Exiting." in output
    return [line for line in output.splitlines() if line.startswith("ERROR:")]
