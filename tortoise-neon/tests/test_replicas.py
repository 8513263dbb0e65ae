"""Read replicas (DATABASE_URL_REPLICA, tortoise_neon/routing.py) against a real hot standby of the
test server that replays 2 s behind it on purpose: scripts and requests read their own writes,
clients that wrote nothing read from the replica, and a replica that is down, waking or far
behind costs no request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tortoise_neon
from tortoise_neon import read_your_writes
from tortoise_neon.read_your_writes import cookie_value, take_cookie
from tortoise_neon.replicas import Write, lsn
from tortoise_neon.routing import RoutingState, request_state
from tortoise_neon.testing import hostnames, servers
from tortoise_neon.testing.apps import (
    app_database,
    app_running,
    create_tables,
    every_slot_taken,
    three_workers_on_seven_slots,
)
from tortoise_neon.testing.fixtures import (
    Postgres,
    edit_url,
    error_line,
    migrate_database,
    missing,
    project,
    project_config,
    replayed,
    run,
    run_script,
    script_env,
)
from tortoise_neon.testing.neon_proxy import Endpoint, NeonProxy, Target, in_front_of

import httpx
import pytest
from tortoise import Tortoise, connections

from tests.project.members import Member


def pause(standby: servers.PostgresServer) -> None:
    """The standby stops replaying: it lags as far as the test needs."""
    servers.admin_execute(standby, "SELECT pg_wal_replay_pause()")


def resume(standby: servers.PostgresServer) -> None:
    servers.admin_execute(standby, "SELECT pg_wal_replay_resume()")


def replica_env(pg: Postgres, db_url: str, replica_url: str) -> dict[str, str]:
    return script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url)


# --- the strings ---------------------------------------------------------------------------


def test_replica_strings_one_or_several_and_pool_size() -> None:
    one = "postgresql://u:p@ep-a.neon.tech/neondb?sslmode=require"
    two = "postgresql://u:p@ep-b-pooler.neon.tech/neondb?sslmode=require&pool_size=3"
    parsed = tortoise_neon.url.parse_replica_urls(f"{one}, {two}")
    assert [r.host for r in parsed] == ["ep-a.neon.tech", "ep-b-pooler.neon.tech"]
    assert [r.pool_size for r in parsed] == [5, 3]
    assert all(r.variable == "DATABASE_URL_REPLICA" for r in parsed)
    with pytest.raises(tortoise_neon.DatabaseError, match="^DATABASE_URL_REPLICA has no host"):
        tortoise_neon.url.parse_replica_urls("postgresql://u:p@/neondb")
    with pytest.raises(tortoise_neon.DatabaseError, match="pool_size=0: give the most connections"):
        tortoise_neon.parse_database_url("postgresql://u:p@h/db?pool_size=0")
    assert tortoise_neon.parse_database_url("postgresql://u:p@h/db?pool_size=20").pool_size == 20


# --- scripts: a read after the script's own write reads it --------------------------------


def test_a_script_reads_its_own_write_from_a_lagging_replica(
        pg: Postgres, dbname: str, db_url: str, replica_url: str, tmp_path: Path) -> None:
    env = replica_env(pg, db_url, replica_url)
    for count in (1, 2, 3):  # the standby is 2 s behind: each run would miss its row there
        result = run_script("members.py", "--name", f"Ada {count}", env=env, cwd=project())
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{count} members; newest: Ada {count}" in result.stdout, result.stdout
        assert "reads to 1 replica" in result.stdout


# --- in one process: routing, the replica check, a replica far behind ----------------------


async def tortoise_with_replica(pg: Postgres, db_url: str, replica_url: str) -> None:
    settings = tortoise_neon.parse_database_url(db_url)
    replica = tortoise_neon.parse_database_url(replica_url)
    if pg.server and pg.server.ca_path:
        settings = replace(settings, sslrootcert=str(pg.server.ca_path))
        replica = replace(replica, sslrootcert=str(pg.server.ca_path))
    settings = replace(settings, replicas=(replica,))
    await Tortoise.init(config=project_config(settings))


async def in_new_request(coro_fn, reads: RoutingState | None = None):  # type: ignore[no-untyped-def]
    """Run ``coro_fn()`` as a new request does: a task with routing state of its own."""

    async def request():  # type: ignore[no-untyped-def]
        request_state.set(reads or RoutingState())
        return await coro_fn()

    return await asyncio.get_running_loop().create_task(request())


class ReplicaReads(logging.Handler):
    """Counts, from tortoise_neon.routing's DEBUG records, the reads that ran on a replica and
    the replicas asked how far they have replayed (a round trip each)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reads = self.checks = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Read ran on replica"):
            self.reads += 1
        elif record.msg.startswith("Read replica %s has replayed"):
            self.checks += 1


@contextlib.contextmanager
def counting_replica_reads() -> Iterator[ReplicaReads]:
    logger, handler = logging.getLogger("tortoise_neon.routing"), ReplicaReads()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.asynccontextmanager
async def routing(pg: Postgres, db_url: str, replica_url: str,
                  standby: servers.PostgresServer) -> AsyncIterator[Any]:
    """Tortoise in this process with the replica, its connection open (the first read opens it
    in the background, on the primary meanwhile); the client. The standby's replay is paused
    and resumed by the test; resumed at the end in any case."""
    await tortoise_with_replica(pg, db_url, replica_url)
    client = connections.get("default")
    try:
        await in_new_request(Member.all().count)
        for _ in range(300):
            if client.router.replicas[0].usable():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replica's connection did not open in 15 s")
        yield client
    finally:
        await asyncio.to_thread(resume, standby)
        await Tortoise.close_connections()


def test_reads_go_to_the_replica_writes_and_what_follows_them_to_the_primary(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer) -> None:
    migrate_database(pg, dbname)
    replayed(pg, standby)  # the standby has the table; from here on it replays nothing
    pause(standby)

    async def go() -> None:
        async with routing(pg, db_url, replica_url, standby):
            await Member.create(name="Ada")  # this task wrote: its reads go to the primary
            assert await Member.all().count() == 1
            with counting_replica_reads() as on_replica:
                assert await in_new_request(Member.all().count) == 0  # another request: replica
            assert on_replica.reads == 1
            with tortoise_neon.primary():  # forced to the primary
                assert await in_new_request(Member.all().count) == 1
            # select_for_update and transactions: the primary's
            from tortoise.transactions import in_transaction

            async def locked() -> int:
                async with in_transaction():
                    return len(await Member.all().select_for_update())

            assert await in_new_request(locked) == 1

    run(go())


def test_a_client_behind_its_own_write_reads_from_the_primary_until_the_replica_has_it(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(read_your_writes.SECRET, "a-secret-for-the-cookie-only-" + "x" * 8)
    migrate_database(pg, dbname)
    replayed(pg, standby)

    async def go() -> None:
        async with routing(pg, db_url, replica_url, standby) as client:
            await asyncio.to_thread(pause, standby)
            await Member.create(name="Ada")
            async with client.acquire_connection() as connection:
                position = await connection.fetchval(read_your_writes.PRIMARY_POSITION)
            signed = cookie_value(client.router.key, position)
            # The client's cookie: the replica has not replayed its write, so the primary.
            writer = RoutingState()
            take_cookie(client.router.key, signed, writer)
            assert writer.must_see is not None and writer.must_see.position == lsn(position)
            assert await in_new_request(Member.all().count, writer) == 1
            assert writer.caught_up is False
            # An edited cookie is as if absent (and cleared): that client reads from the replica.
            edited = RoutingState()
            assert not take_cookie(client.router.key, signed.replace(position, "0/1"), edited)
            assert edited.bad_cookie and edited.must_see is None
            assert await in_new_request(Member.all().count, edited) == 0
            assert await in_new_request(Member.all().count) == 0  # nobody else's
            # Far behind: a write older than FAR_BEHIND not replayed yet: the primary for all.
            old = RoutingState(must_see=Write(lsn(position), time.time() - 60, trusted=True))
            with caplog.at_level(logging.WARNING, logger="tortoise_neon.replicas"):
                assert await in_new_request(Member.all().count, old) == 1
                assert await in_new_request(Member.all().count) == 1
            lines = [r.getMessage() for r in caplog.records if r.name == "tortoise_neon.replicas"]
            assert len(lines) == 1 and "has not replayed a write made 60 s ago" in lines[0]
            assert "reads go to the primary; trying it again in 30 s" in lines[0]
            await asyncio.to_thread(resume, standby)
            # Caught up: the replica again, for a client whose write it has replayed.
            client.router.replicas[0].down_until = 0
            again = RoutingState()
            take_cookie(client.router.key, signed, again)
            for _ in range(100):
                again.caught_up = None
                if await in_new_request(Member.all().count, again) == 1 and again.caught_up:
                    break
                await asyncio.sleep(0.1)
            assert again.caught_up is True
            back = [r.getMessage() for r in caplog.records if "is back" in r.getMessage()]
            assert back == [f"Read replica {standby.host} is back: reads go to it again"]

    run(go())


# --- the app: POST then GET by the same client, others on the replica, replica stopped -------


def test_the_app_reads_a_clients_own_writes_and_serves_others_from_the_replica(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    create_tables(pg, db_url)
    replayed(pg, standby)
    log = tmp_path / "uvicorn.log"
    with app_running(replica_env(pg, db_url, replica_url), log) as writer:
        base = str(writer.base_url)
        # 10 times: POST, then GET by the same client (its cookie): the row is there, 2 s before
        # the standby has it.
        for i in range(10):
            created = writer.post("/members", json={"name": f"Ada {i}"})
            assert created.status_code == 201, created.text
            assert read_your_writes.COOKIE in created.headers.get("set-cookie", "")
            names = [m["name"] for m in writer.get("/members", params={"limit": 100}).json()]
            assert f"Ada {i}" in names, (i, names)
        # Clients that wrote nothing read from the replica once it has replayed this process's
        # writes: with replay paused, a row another program writes now is on the primary only,
        # and they never see it. (A row written through this process they would see: the
        # process's latest write holds its reads to the primary, tests/test_own_writes.py.)
        replayed(pg, standby)
        pause(standby)
        try:
            servers.admin_execute(pg.target, "INSERT INTO library_members (name, joined_at) "
                                             "VALUES ('Grace', now())", database=dbname)
            with httpx.Client(base_url=base, timeout=30) as reader:
                seen = []
                for _ in range(10):
                    response = reader.get("/members", params={"limit": 100})
                    assert response.status_code == 200, response.text
                    seen.append("Grace" in [m["name"] for m in response.json()])
            assert not any(seen), seen  # the replica's view
        finally:
            resume(standby)
        # The standby stopped: every GET is 200, from the primary, with one log line.
        standby.stop()
        try:
            with httpx.Client(base_url=base, timeout=30) as reader:
                statuses = [reader.get("/members").status_code for _ in range(10)]
            assert statuses == [200] * 10
        finally:
            standby.start()
    output = log.read_text()
    assert "Traceback" not in output and servers.APP_PASSWORD not in output
    down = [line for line in output.splitlines() if "Read replica" in line]
    assert len(down) == 1, output
    assert f"Read replica {standby.host} not used (" in down[0]
    assert "Could not connect" not in down[0]  # the cause in a few words: refused, shut down
    assert "reads go to the primary; trying it again in 30 s" in down[0]


def test_an_idle_app_opens_no_replica_connection(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    create_tables(pg, db_url)
    with app_running(replica_env(pg, db_url, replica_url), tmp_path / "uvicorn.log") as api:
        assert api.get("/health").status_code == 200
        assert api.post("/members", json={"name": "Ada"}).status_code == 201
        count = servers.admin_query(
            standby, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbname)[0][0]
        assert count == 0  # writes and the health check opened nothing on the replica


# --- through the Neon-faithful proxy: a replica endpoint ------------------------------------


def test_a_replica_endpoint_through_neon_proxy(
        pg: Postgres, dbname: str, db_url: str, replica_url: str, neon: NeonProxy,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    assert standby.ca_path is not None
    import ssl

    neon.endpoints[hostnames.REPLICA_ENDPOINT] = Endpoint(
        compute=Target(standby.host, standby.port,
                       ssl.create_default_context(cafile=str(standby.ca_path))),
        suspended=True, wake_delay=1.0)  # scaled to zero: it wakes on the first read
    primary = (f"postgresql://{servers.APP_USER}:{quote(servers.APP_PASSWORD, safe='')}"
               f"@{hostnames.POOLED}:{neon.port}/{dbname}?sslmode=require")
    replica = primary.replace(hostnames.POOLED, hostnames.REPLICA)
    create_tables(pg, db_url)
    replayed(pg, standby)
    try:
        with app_running(replica_env(pg, primary, replica), tmp_path / "uvicorn.log") as writer:
            assert writer.post("/members", json={"name": "Ada"}).status_code == 201
            assert "Ada" in [m["name"] for m in writer.get("/members").json()]
            with httpx.Client(base_url=str(writer.base_url), timeout=30) as reader:
                first = reader.get("/members")  # the replica wakes meanwhile: the primary
                assert first.status_code == 200 and first.json()[0]["name"] == "Ada"
                for _ in range(100):
                    if neon.endpoints[hostnames.REPLICA_ENDPOINT].sessions:
                        break
                    time.sleep(0.1)
                # The replica has the app's write; Bob, another program's, is on the primary
                # only: the reader's view is the replica's.
                replayed(pg, standby)
                pause(standby)
                servers.admin_execute(pg.target, "INSERT INTO library_members (name, joined_at)"
                                                 " VALUES ('Bob', now())", database=dbname)
                later = reader.get("/members")
                assert later.status_code == 200, later.text
                assert [m["name"] for m in later.json()] == ["Ada"]  # the replica's view
    finally:
        resume(standby)


# --- many processes on few connection slots -------------------------------------------------


def test_three_workers_on_seven_slots_never_fail_a_request(
        few_slots: Postgres, tmp_path: Path) -> None:
    three_workers_on_seven_slots(few_slots, tmp_path, "/members")


@pytest.mark.parametrize("through", ["direct", "neon-proxy"])
def test_a_script_with_every_slot_taken_names_the_cause_and_the_fix(
        through: str, few_slots: Postgres, tmp_path: Path) -> None:
    """Neon's proxy re-sends the compute's 53300 as XX000 with the text only: the same line."""
    server = few_slots.server
    assert server is not None
    with contextlib.ExitStack() as stack:
        url = few_slots.url(app_database(server))
        if through == "neon-proxy":
            reason = hostnames.ensure()
            if reason:
                missing(reason)
            proxy = stack.enter_context(in_front_of(server, tmp_path))
            url = edit_url(url, host=hostnames.DIRECT, port=proxy.port)
        result, took = every_slot_taken(few_slots, url, "members.py", "--name", "Ada")
    line = error_line(result)
    host = hostnames.DIRECT if through == "neon-proxy" else "127.0.0.1"
    assert line.startswith("Error: The database had no free connection slot for 5 s "
                           f"(DATABASE_URL at {host}: "), line
    assert "remaining connection slots are reserved" in line
    fix = ("use the pooled connection string (the -pooler host), or lower pool_size in "
           "DATABASE_URL" if through == "neon-proxy" else  # Neon's pooled string on Neon only
           "put a pooler such as PgBouncer in front of the server, lower pool_size in "
           "DATABASE_URL, or raise the server's max_connections")
    assert f"close connections other programs hold, or {fix}" in line
    assert ("-pooler" in line) == (through == "neon-proxy"), line
    assert "host and port" not in line
    assert took < 25, took


def test_a_request_with_no_connection_and_no_free_slot_answers_503(
        few_slots: Postgres, tmp_path: Path) -> None:
    """The app's connection is gone (a restart ended it) and others took every slot: the
    request waits 5 s for one, then 503 with Retry-After; the log names the cause and the fix."""
    server = few_slots.server
    assert server is not None
    name = app_database(server)
    url = few_slots.url(name)
    create_tables(few_slots, url)
    log = tmp_path / "uvicorn.log"
    with app_running(script_env(few_slots, url), log) as api:
        assert api.get("/members").status_code == 200
        servers.admin_execute(server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      f"WHERE datname = '{name}'")
        with servers.every_slot_taken(server, name) as taken:
            assert taken == 7
            began = time.monotonic()
            response = api.get("/members")
            took = time.monotonic() - began
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "2"
        assert 4 < took < 10, took
        assert api.get("/members").status_code == 200  # slots free again
    lines = [line for line in log.read_text().splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1, lines
    assert "Error: The database had no free connection slot for 5 s" in lines[0]
    assert ("put a pooler such as PgBouncer in front of the server, lower pool_size in "
            "DATABASE_URL, or raise the server's max_connections") in lines[0]  # not Neon
