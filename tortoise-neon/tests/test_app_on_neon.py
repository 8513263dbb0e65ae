"""The FastAPI app on Neon: scale to zero, compute restarts under load, the pooler's statements.

The app runs under uvicorn as the README runs it, through the Neon-faithful proxy
(tortoise_neon/testing/neon_proxy.py): the pooled host through a real PgBouncer 1.21+ in transaction mode with
``max_prepared_statements`` as Neon sets it, the direct host straight to the compute. A suspend
ends every connection as Neon's does: a bare close on the pooled host, FATAL 57P01 on the direct.
Nothing here is timed: the tests count connections, rows and status codes.
"""

from __future__ import annotations

import collections
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tortoise_neon.client import is_read
from tortoise_neon.testing import hostnames, servers
from tortoise_neon.testing.apps import app_running, create_tables
from tortoise_neon.testing.fixtures import (
    Postgres,
    edit_url,
    execute,
    neon_url,
    query,
    script_env,
    through_pgbouncer,
)
from tortoise_neon.testing.load import Counted, burst, round_trips_per_request
from tortoise_neon.testing.neon_proxy import NeonProxy, Target
from tortoise_neon.testing.proxy import ProxyThread

import httpx
import pytest

ENDPOINT = hostnames.ENDPOINT
IDLE_FOR = 3.0  # seconds an idle app is watched after a suspend: it must open no connection
CLIENTS, LOAD_FOR, SUSPEND_EVERY = 4, 5.0, 1.5  # the load while the compute restarts


@contextmanager
def app_through_neon(neon: NeonProxy, pg: Postgres, dbname: str, host: str, log: Path,
                     port: int | None = None, **params: str) -> Iterator[httpx.Client]:
    """The app on Neon's console string for ``host`` (through another ``port``: a counting
    proxy in front of Neon's), with more URL parameters if given."""
    url = edit_url(neon_url(neon, dbname, host), port=port, **params)
    create_tables(pg, url)
    with app_running(script_env(pg, url), log, timeout=60) as client:
        yield client


def pooled_or_direct(request: pytest.FixtureRequest, neon: NeonProxy,
                     local_pg: servers.PostgresServer) -> str:
    if request.param == "pooled":
        through_pgbouncer(neon, request, local_pg)
        return hostnames.POOLED
    return hostnames.DIRECT


@pytest.fixture(params=["pooled", "direct"])
def host(request: pytest.FixtureRequest, neon: NeonProxy,
         local_pg: servers.PostgresServer) -> str:
    return pooled_or_direct(request, neon, local_pg)


def test_an_idle_app_lets_the_compute_scale_to_zero(neon: NeonProxy, pg: Postgres, dbname: str,
                                                    host: str, tmp_path: Path) -> None:
    """After a suspend, an app that gets no database request opens no connection (the pool has
    no floor to restore), while the platform polls /health; the next request wakes the compute."""
    endpoint = neon.endpoints[ENDPOINT]
    with app_through_neon(neon, pg, dbname, host, tmp_path / "uvicorn.log") as api:
        assert api.post("/members", json={"name": "before"}).status_code == 201
        neon.suspend(ENDPOINT)
        assert not endpoint.sessions  # every connection of the app was ended
        opened = endpoint.attempts
        watch_until = time.monotonic() + IDLE_FOR
        while time.monotonic() < watch_until:  # a platform's health checks, fast
            assert api.get("/health").json() == {"status": "ok"}
            time.sleep(0.05)
        assert endpoint.attempts == opened, "the idle app opened a connection: the compute woke"
        assert endpoint.suspended
        listed = api.get("/members")  # wakes the compute
        assert listed.status_code == 200, listed.text
        assert [m["name"] for m in listed.json()] == ["before"]
        assert endpoint.attempts == opened + 1 and not endpoint.suspended
    log = (tmp_path / "uvicorn.log").read_text()
    warned = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert "Traceback" not in log and len(warned) == 1, log  # the start-up line only:
    assert warned[0].startswith("WARNING:  Connected to PostgreSQL at "), log  # how it connected


def test_no_500_while_the_compute_restarts_under_load(neon: NeonProxy, pg: Postgres,
                                                      dbname: str, host: str,
                                                      tmp_path: Path) -> None:
    """CLIENTS clients, GET and POST alternating, while every connection is ended every
    SUSPEND_EVERY s: no 500, no traceback; GETs all 200; every 201 is a saved row, and a 503
    that says nothing was saved left no row."""
    log = tmp_path / "uvicorn.log"
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    created: list[int] = []
    not_saved: list[str] = []
    problems: list[str] = []
    stop = threading.Event()

    def client(base_url: str, number: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as api:
            try:
                requests(api, number)
            except httpx.HTTPError as exc:
                problems.append(f"client {number}: {exc!r}")

    def requests(api: httpx.Client, number: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 2:
                response = api.get("/members", params={"limit": 5})
                statuses["GET", response.status_code] += 1
                if response.status_code != 200:
                    problems.append(f"GET {response.status_code}: {response.text}")
                continue
            name = f"c{number}-{i}-{uuid.uuid4().hex[:6]}"
            response = api.post("/members", json={"name": name})
            statuses["POST", response.status_code] += 1
            if response.status_code == 201:
                created.append(response.json()["id"])
            elif response.status_code == 503 and "Retry-After" in response.headers:
                if response.json()["may_have_been_saved"] is False:
                    not_saved.append(name)
            else:
                problems.append(f"POST {response.status_code}: {response.text}")

    with app_through_neon(neon, pg, dbname, host, log) as api:
        threads = [threading.Thread(target=client, args=(str(api.base_url), n))
                   for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        suspends = 0
        try:
            end = time.monotonic() + LOAD_FOR
            while time.monotonic() < end:
                time.sleep(SUSPEND_EVERY)
                neon.suspend(ENDPOINT)
                suspends += 1
        finally:
            stop.set()
            for thread in threads:
                thread.join(120)
    output = log.read_text()
    print(f"\n{host}: {suspends} suspends, {dict(statuses)}, {len(created)} rows created")
    assert not problems, problems[:5]
    assert statuses["GET", 200] > 0 and statuses["POST", 201] > 0, statuses
    assert "Traceback" not in output and "500 Internal Server Error" not in output, output
    ids = {r["id"] for r in query(pg, dbname, "SELECT id FROM library_members")}
    assert set(created) <= ids  # every 201 is a saved row
    if not_saved:
        left = query(pg, dbname, "SELECT name FROM library_members WHERE name = ANY($1::text[])",
                     not_saved)
        assert not left, left  # "may_have_been_saved": false means it was not


def test_statements_a_migration_made_stale_fail_no_request(neon: NeonProxy, pg: Postgres,
                                                           dbname: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest,
                                                           local_pg: servers.PostgresServer
                                                           ) -> None:
    """Through PgBouncer 1.21+, after ALTER COLUMN ... TYPE every cached statement of that text
    fails (InvalidCachedStatementError), from this app and a restarted one, until PgBouncer
    replaces its server connections: the app turns its cache off, and runs the statement again."""
    through_pgbouncer(neon, request, local_pg)
    log = tmp_path / "uvicorn.log"
    with app_through_neon(neon, pg, dbname, hostnames.POOLED, log) as api:
        assert api.post("/members", json={"name": "Ada"}).status_code == 201
        for _ in range(3):  # cached, and prepared on PgBouncer's server connections
            assert api.get("/members").status_code == 200
        execute(pg, dbname, "ALTER TABLE library_members ALTER COLUMN name TYPE varchar(80)")
        for _ in range(5):
            listed = api.get("/members")
            assert listed.status_code == 200, listed.text
            assert [m["name"] for m in listed.json()] == ["Ada"]
        assert api.post("/members", json={"name": "Grace"}).status_code == 201
    output = log.read_text()
    assert "Traceback" not in output, output
    assert output.count("Statement cache off for this process: a prepared statement went "
                        "stale after a schema change") == 1, output


def test_a_pooler_without_prepared_statements_and_the_cache_asked_for(
        neon: NeonProxy, pg: Postgres, dbname: str, tmp_path: Path,
        local_pg: servers.PostgresServer, request: pytest.FixtureRequest) -> None:
    """statement_cache_size=100 through a PgBouncer that keeps no prepared statements in
    transaction mode (Debian's 1.18): the first error turns the cache off, with one line; every
    request is answered 2xx."""
    bouncer: servers.PgBouncer = request.getfixturevalue("old_pgbouncer")
    neon.pooler = Target("127.0.0.1", bouncer.port,
                         ssl.create_default_context(cafile=str(local_pg.ca_path)))
    log = tmp_path / "uvicorn.log"
    statuses: collections.Counter[int] = collections.Counter()
    with app_through_neon(neon, pg, dbname, hostnames.POOLED, log,
                          statement_cache_size="100") as api:

        def client(number: int) -> None:
            for i in range(15):
                statuses[api.post("/members", json={"name": f"{number}-{i}"}).status_code] += 1
                statuses[api.get("/members").status_code] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    output = log.read_text()
    assert set(statuses) == {200, 201}, (statuses, output)
    assert query(pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 60
    assert "Traceback" not in output, output
    assert output.count("Statement cache off for this process: the pooler does not keep "
                        "prepared statements") == 1, output


@pytest.mark.parametrize(("cache", "expected"), [(None, 1.0), ("0", 2.0)])
def test_one_round_trip_per_repeated_statement_on_the_pooler(
        neon: NeonProxy, pg: Postgres, dbname: str, tmp_path: Path,
        local_pg: servers.PostgresServer, request: pytest.FixtureRequest,
        cache: str | None, expected: float) -> None:
    """Neon's pooled host through PgBouncer 1.21+ (max_prepared_statements as Neon sets it):
    the statement cache is on, and each request's statement costs one round trip (Bind,
    Execute, Sync), counted on the wire by tortoise_neon/testing/proxy.py. With the cache off (the URL's
    statement_cache_size=0): two, Parse/Describe then Bind/Execute. /health costs none."""
    through_pgbouncer(neon, request, local_pg)
    params = {} if cache is None else {"statement_cache_size": cache}
    log = tmp_path / "uvicorn.log"

    def count(proxy: ProxyThread) -> None:
        with app_through_neon(neon, pg, dbname, hostnames.POOLED, log, proxy.port,
                              **params) as api:
            assert set(burst(api, "/members")) == {200, 201}  # spread over PgBouncer's server connections
            for method, path, cost in [("GET", "/members", expected),
                                       ("POST", "/members", expected),
                                       ("GET", "/health/db", expected), ("GET", "/health", 0)]:
                counted = round_trips_per_request(api, proxy, method, path, count=10)
                assert counted == Counted(cost, 0, 0), f"{method} {path}: {counted}"

    with ProxyThread("127.0.0.1", neon.port, delay_ms=20) as proxy:
        count(proxy)
        proxy.settle()  # the app's connections closed: none left to the proxy's loop
    assert "Statement cache off" not in (tmp_path / "uvicorn.log").read_text()



@pytest.mark.parametrize(("sql", "read"), [
    ("SELECT 1", True),
    ('  select "id" FROM "library_members" LIMIT $1', True),
    ('SELECT "id" FROM "a" LIMIT 0;\nSELECT "id" FROM "b" LIMIT 0;', True),  # check_schema()
    ('INSERT INTO "library_members" ("name") VALUES ($1) RETURNING "id"', False),
    ("SELECT pg_advisory_xact_lock(1);\nCREATE TABLE x (id int)", False),  # create_schema()
    ("WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone", False),
    ("UPDATE t SET a = 1", False),
    ("", False),
])
def test_only_selects_are_reads_repeated_after_a_lost_connection(sql: str, read: bool) -> None:
    assert is_read(sql) is read
