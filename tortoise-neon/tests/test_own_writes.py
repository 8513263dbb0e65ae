"""Own writes for a client with no cookie jar (curl, httpx without a jar, a service calling
another), with DATABASE_URL_REPLICA on a real hot standby 2 s behind: within one process, no read
goes to a replica that has not replayed that process's latest write (tortoise_neon/routing.py);
a client may also send back the ``db-wal`` response header, which holds wherever its next
request lands."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from tortoise_neon import read_your_writes
from tortoise_neon.replicas import lsn
from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import app_running, create_tables
from tortoise_neon.testing.fixtures import Postgres, migrate_database, replayed, run, script_env

import httpx

from tests.project.members import Member


def post_then_get(base: str, name: str, headers: dict[str, str] | None = None
                  ) -> tuple[bool, httpx.Response]:
    """A POST, then at once a GET, each as its own client would send it with no cookie jar (a
    new connection each: curl): whether the GET lists the row; the POST's response."""
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=30, limits=fresh) as once:
        created = once.post("/members", json={"name": name})
    assert created.status_code == 201, created.text
    sent = {key: created.headers[key] for key in (headers or {}) if key in created.headers}
    with httpx.Client(base_url=base, timeout=30, limits=fresh) as once:
        listed = once.get("/members", params={"limit": 1000}, headers=sent)
    assert listed.status_code == 200, listed.text
    return name in [m["name"] for m in listed.json()], created


def test_a_client_without_cookies_reads_its_own_write_on_one_worker(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    create_tables(pg, db_url)
    replayed(pg, standby)
    env = script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url)
    log = tmp_path / "uvicorn.log"
    with app_running(env, log) as api:
        base = str(api.base_url)
        seen = [post_then_get(base, f"Ada {i}")[0] for i in range(10)]
    print(f"one worker, no cookies: {seen.count(True)} of 10 saw their own write")
    assert seen == [True] * 10, seen
    output = log.read_text()
    assert "Traceback" not in output, output


def test_three_workers_without_cookies_and_with_the_header(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    """``uvicorn --workers 3``, 30 POST-then-GET pairs by clients without cookies, each request
    on a new connection (whichever worker accepts it serves it). Without the header, a GET sees
    the row when the worker that wrote it serves it, or when the serving worker holds its reads
    to the primary for a write of its own: the figure is printed (docs/replicas-and-workers.md),
    not asserted, since which worker accepts is the kernel's choice. Sending back ``db-wal``:
    30 of 30."""
    create_tables(pg, db_url)
    replayed(pg, standby)
    env = script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url)
    log = tmp_path / "uvicorn.log"
    with app_running(env, log, workers=3) as api:
        base = str(api.base_url)
        for _ in range(30):  # every worker opens its replica connection
            api.get("/members")
        time.sleep(3)  # (not a deadline: only so that the figure is about a warm app)
        without = [post_then_get(base, f"Ada {i}")[0] for i in range(30)]
        with_header = [post_then_get(base, f"Grace {i}", {read_your_writes.HEADER: ""})[0]
                       for i in range(30)]
    print(f"three workers, no cookies: {without.count(True)} of 30 saw their own write; "
          f"sending back {read_your_writes.HEADER}: {with_header.count(True)} of 30")
    assert with_header == [True] * 30, with_header
    assert "Traceback" not in log.read_text()


def test_the_db_wal_header_carries_own_writes_to_another_process(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    """Two instances of the app (two processes: what ``--workers 2`` or two machines are). A
    client without cookies writes through one and reads through the other: it sees its row when
    it sends back the ``db-wal`` header, and not without it (the other process never wrote)."""
    create_tables(pg, db_url)
    replayed(pg, standby)
    env = script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url,
                     **{read_your_writes.SECRET: "a-secret-both-instances-share-" + "s" * 8})
    with app_running(env, tmp_path / "one.log") as one, \
            app_running(env, tmp_path / "two.log") as two:
        # ``two`` reads from the replica once its connection is open (opened in the background)
        for _ in range(300):
            assert two.get("/members").status_code == 200
            if holds_a_replica_connection(standby, dbname):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the second instance never opened its replica connection")
        pause(standby)
        try:
            created = one.post("/members", json={"name": "Ada"})
            assert created.status_code == 201, created.text
            value = created.headers[read_your_writes.HEADER]
            two.cookies.clear()
            names = [m["name"] for m in two.get("/members").json()]
            assert "Ada" not in names, names  # another process, no header: the replica's view
            sent = {read_your_writes.HEADER: value}
            for _ in range(3):
                names = [m["name"] for m in two.get("/members", headers=sent).json()]
                assert "Ada" in names, names  # the header: the primary, until the replica has it
            edited = {read_your_writes.HEADER: value.replace(value.split(".")[0], "FFFFFFFF/0")}
            names = [m["name"] for m in two.get("/members", headers=edited).json()]
            assert "Ada" not in names, names  # a header that does not verify is as if absent
        finally:
            resume(standby)
        # Once the replica has replayed it, the header's reads go to the replica again: the
        # row is there, and a row another program writes while replay is paused is not.
        replayed(pg, standby)
        pause(standby)
        try:
            servers.admin_execute(pg.target, "INSERT INTO library_members (name, joined_at) "
                                             "VALUES ('Bob', now())", database=dbname)
            names = [m["name"] for m in two.get("/members", headers=sent).json()]
            assert "Ada" in names and "Bob" not in names, names
        finally:
            resume(standby)
    for name in ("one.log", "two.log"):
        assert "Traceback" not in (tmp_path / name).read_text()


def holds_a_replica_connection(standby: servers.PostgresServer, dbname: str) -> bool:
    """Whether an app holds a connection to the standby for ``dbname`` (its replica pool)."""
    return bool(servers.admin_query(
        standby, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbname)[0][0])


def pause(standby: servers.PostgresServer) -> None:
    servers.admin_execute(standby, "SELECT pg_wal_replay_pause()")


def resume(standby: servers.PostgresServer) -> None:
    servers.admin_execute(standby, "SELECT pg_wal_replay_resume()")


# --- in one process: the process's latest write, the check, and its cost ---------------------


def test_a_processs_write_holds_every_read_to_the_primary_until_the_replica_has_it(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer) -> None:
    """After ``remember_write()`` (what the middleware calls once a request's write committed), a
    new request with no cookie reads from the primary while the replica is behind; once the
    replica has replayed it, from the replica, and with no more checks (no round trip): the
    position a replica has replayed is remembered."""
    from tests.test_replicas import counting_replica_reads, in_new_request, routing

    migrate_database(pg, dbname)
    replayed(pg, standby)

    async def go() -> None:
        async with routing(pg, db_url, replica_url, standby) as client:
            await asyncio.to_thread(pause, standby)

            async def write() -> str:
                await Member.create(name="Ada")
                async with client.acquire_connection() as connection:
                    return str(await connection.fetchval(read_your_writes.PRIMARY_POSITION))

            client.router.remember_write(await in_new_request(write))
            with counting_replica_reads() as on_replica:
                assert await in_new_request(Member.all().count) == 1  # another request: primary
            assert on_replica.reads == 0
            assert on_replica.checks >= 1  # the replica was asked, and was behind
            await asyncio.to_thread(resume, standby)
            with counting_replica_reads() as on_replica:
                for _ in range(300):  # the replica replays 2 s behind: then it serves the reads
                    count = await in_new_request(Member.all().count)
                    if on_replica.reads:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the replica never served a read again")
            assert count == 1  # it has Ada
            with counting_replica_reads() as on_replica:
                for _ in range(5):
                    assert await in_new_request(Member.all().count) == 1
            assert on_replica.reads == 5
            assert on_replica.checks == 0  # caught up and remembered: no round trip to check

    run(go())


def test_a_write_that_ends_a_wal_page_is_one_the_replica_reaches(
        pg: Postgres, dbname: str, replica_url: str, standby: servers.PostgresServer) -> None:
    """After a write whose WAL record ends a page, the primary's insert position is past the next
    page's header, a position no replica reports until another record comes (PostgreSQL's next
    standby snapshot, up to 15 s later); the position the middleware remembers is the record's
    end, which the replica reports as soon as it has replayed the write."""

    async def go() -> tuple[str, str]:
        conn = await servers.admin_connect(pg.target, dbname)
        try:
            await conn.execute("CREATE TABLE pages (filler text)")
            block = int(await conn.fetchval("SELECT current_setting('wal_block_size')"))
            for size in itertools.islice(itertools.cycle(range(1, 200)), 50_000):
                await conn.execute(f"INSERT INTO pages VALUES (repeat('x', {size}))")
                inserted, remembered = await conn.fetchrow(
                    f"SELECT pg_current_wal_insert_lsn()::text, ({read_your_writes.PRIMARY_POSITION})")
                if lsn(inserted) % block == 24:  # the page's header: the record ended the last one
                    return inserted, remembered
            raise AssertionError("no write ended a WAL page in 50,000")
        finally:
            await conn.close()

    inserted, remembered = run(go())
    assert lsn(remembered) == lsn(inserted) - 24
    replayed(pg, standby, timeout=10, position=remembered)  # it replays each commit 2 s after
