"""The project's ASGI app under uvicorn (``uvicorn APP``, as a user runs it), for the tests."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import tortoise_neon
from tortoise_neon.migrate import quote_ident
from tortoise_neon.testing import servers
from tortoise_neon.testing.fixtures import (
    Postgres,
    project,
    project_app,
    project_config,
    run,
    run_script,
    script_env,
)
from tortoise_neon.testing.load import steady
from tortoise_neon.testing.proxy import ProxyThread
from tortoise_neon.testing.servers import APP_PASSWORD, free_port

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
        settings = tortoise_neon.parse_database_url(db_url)
        if pg.server and pg.server.ca_path:
            settings = replace(settings, sslrootcert=str(pg.server.ca_path))
        config = project_config(settings)
        await Tortoise.init(config=config)
        try:
            await tortoise_neon.migrate(config["apps"])
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


def three_workers_on_seven_slots(few_slots: Postgres, tmp_path: Path, resource: str) -> None:
    """The project's app under ``uvicorn --workers 3`` (a pool of 5 each: 15 connections
    wanted) on 7 slots, 24 clients for 6 s: no 500, no traceback, none slower than 10 s, and
    the log names the cause and the fix. The app reaches the server through a proxy that adds
    100 ms to each round trip, as a network between an app and a far Neon region does: the
    clients' requests spend their time waiting on the database, so the workers want more
    connections than the compute has, whatever this machine's speed (at 20 ms, on a busy
    machine, the clients alone could not keep 8 requests in flight)."""
    assert few_slots.server is not None
    server = few_slots.server
    name = app_database(server)
    create_tables(few_slots, few_slots.url(name))
    log = tmp_path / "uvicorn.log"
    with ProxyThread(server.host, server.port, delay_ms=100) as proxy:
        url = few_slots.url(name, port=proxy.port)
        with app_running(script_env(few_slots, url), log, workers=3) as api:
            results = steady(str(api.base_url), resource, clients=24, seconds=6)
    answers = collections.Counter(answer for answer, _ in results)
    slowest = max(seconds for _, seconds in results)
    output = log.read_text()
    full = [line for line in output.splitlines() if "no free connection slot" in line]
    print(f"3 workers, 7 slots, 24 clients, 6 s: {dict(answers)}; slowest {slowest:.2f} s; "
          f"{len(full)} workers said the compute was full")
    assert set(answers) <= {"200", "201", "503"}, (answers, output)
    # a 503 only for a worker that holds no connection yet (pool.py): asyncpg's own pool, which
    # opens a connection per waiting request, answered 503 to about a fifth of them here
    assert answers["503"] * 20 <= len(results), answers
    assert slowest < 10, slowest
    assert "Traceback" not in output, output
    assert full, "the compute was never full: the test proves nothing"
    # 127.0.0.1 is no Neon host: the fixes any PostgreSQL has, not Neon's pooled string
    assert all("put a pooler such as PgBouncer in front of the server, lower pool_size in "
               "DATABASE_URL, or raise the server's max_connections" in line
               and "-pooler" not in line for line in full), full
    assert not any("check that the host and port" in line for line in output.splitlines())


def app_database(server: servers.PostgresServer) -> str:
    """A new database on ``server`` owned by the app's role (kept until the server goes)."""
    name = f"slots_{uuid.uuid4().hex[:10]}"
    servers.admin_execute(server, f"CREATE DATABASE {quote_ident(name)} "
                                  f"OWNER {quote_ident(servers.APP_USER)}")
    return name


def every_slot_taken(few_slots: Postgres, url: str, *script: str) -> tuple[Any, float]:
    """Run the script with every slot of the app's role taken: its result, and how long."""
    assert few_slots.server is not None
    database_name = url.rpartition("/")[2].partition("?")[0]
    with servers.every_slot_taken(few_slots.server, database_name) as taken:
        assert taken == 7  # the app's role has 7
        began = time.monotonic()
        result = run_script(*script, env=script_env(few_slots, url), cwd=project())
        return result, time.monotonic() - began
