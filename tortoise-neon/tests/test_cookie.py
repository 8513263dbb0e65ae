"""The read-your-writes cookie (``db_wal``, read_your_writes.py) and the 409/422 log lines, as
a client can shape them: nothing in the cookie derives from the database's password; a cookie
that does not parse, verify or is too old is as if absent and cleared, never a 500 and never a
switch to the primary; ``Secure`` over HTTPS; a client's value never reaches the log."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import tortoise_neon
from tortoise_neon import read_your_writes, routing
from tortoise_neon.read_your_writes import COOKIE, COOKIE_MAX_AGE, HEADER, cookie_value
from tortoise_neon.replicas import Write, lsn
from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import app_running, create_tables
from tortoise_neon.testing.fixtures import Postgres, replayed, script_env

import asyncpg
import httpx
import pytest
from tortoise import Tortoise, connections

SECRET = "the-cookie-secret-of-this-test-" + "k" * 12
POSITION = "0/16B3F40"


def cookie_of(response: httpx.Response) -> str | None:
    """The Set-Cookie header for db_wal, if the response has one."""
    headers = [v for v in response.headers.get_list("set-cookie")
               if v.startswith(f"{COOKIE}=")]
    assert len(headers) <= 1, headers
    return headers[0] if headers else None


def cleared(response: httpx.Response) -> bool:
    header = cookie_of(response)
    return header is not None and header.startswith(f"{COOKIE}=; Max-Age=0;")


# --- the key: the secret meant for it, never the password ------------------------------------


@pytest.mark.parametrize("secret", [None, SECRET])
def test_the_cookie_for_a_write_position_is_the_same_whatever_the_password(
        secret: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client Tortoise builds from DATABASE_URL and DATABASE_URL_REPLICA (no connection is
    opened): two passwords, one cookie."""
    if secret is None:
        monkeypatch.delenv(read_your_writes.SECRET, raising=False)
    else:
        monkeypatch.setenv(read_your_writes.SECRET, secret)

    async def cookie(password: str) -> str:
        settings = tortoise_neon.parse_database_url(
            f"postgresql://app:{password}@db.example.com/neondb?sslmode=require")
        settings = replace(settings, replicas=(tortoise_neon.parse_database_url(
            f"postgresql://app:{password}@replica.example.com/neondb?sslmode=require"),))
        await Tortoise.init(config=tortoise_neon.tortoise_config(
            settings, migrations="tests.project.migrations"))
        try:
            return cookie_value(connections.get("default").router.key, POSITION, 1_700_000_000)
        finally:
            await Tortoise.close_connections()

    first, second = asyncio.run(cookie("secretpw")), asyncio.run(cookie("Another-Pw-9"))
    assert first == second
    if secret is None:
        assert first == f"{POSITION}.1700000000"  # unsigned: nothing but the position and time
    else:
        assert first == cookie_value(SECRET.encode(), POSITION, 1_700_000_000)
        assert first.count(".") == 2


def test_a_short_secret_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(read_your_writes.SECRET, "password1")
    with pytest.raises(tortoise_neon.DatabaseError) as raised:
        read_your_writes.cookie_key()
    assert str(raised.value) == (
        "READ_YOUR_WRITES_SECRET has 9 characters: give it 32 or more random ones, the same for "
        "every worker (python -c \"import secrets; print(secrets.token_urlsafe(32))\"), or unset "
        "it for an unsigned cookie")


@pytest.mark.parametrize("key", [None, SECRET.encode()], ids=["unsigned", "signed"])
def test_which_cookies_are_taken(key: bytes | None) -> None:
    """Taken: this configuration's form, fresh. Everything else is as if absent, and cleared."""
    now = int(time.time())
    good = cookie_value(key, POSITION, now)
    other = cookie_value(None if key else SECRET.encode(), POSITION, now)
    stale = cookie_value(key, POSITION, now - COOKIE_MAX_AGE - 5)
    ahead = cookie_value(key, POSITION, now + read_your_writes.CLOCK_SKEW + 60)
    for value in (other, stale, ahead, "0/0.1.\xe9", f"{POSITION}.\u00b2", good + "\xe9",
                  f"{POSITION}.{now}.{'0' * 20}", "", "garbage", good.replace("0/", "1/")
                  if key else f"{POSITION}.{now}.x"):
        reads = routing.RoutingState()
        assert not read_your_writes.take_cookie(key, value, reads), value
        assert reads.bad_cookie and reads.must_see is None
    reads = routing.RoutingState()
    assert read_your_writes.take_cookie(key, good, reads)
    assert reads.must_see == Write(lsn(POSITION), now, trusted=key is not None)
    assert not reads.bad_cookie


# --- the app: a bad cookie answers 200, is cleared, and its reads go to the replica ---------


def test_bad_cookies_are_cleared_and_reads_stay_on_the_replica(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    create_tables(pg, db_url)
    replayed(pg, standby)
    env = script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url,
                     **{read_your_writes.SECRET: SECRET})
    log = tmp_path / "uvicorn.log"
    key = SECRET.encode()
    non_ascii = {b"cookie": f"{COOKIE}=0/0.1.\xe9".encode("latin-1")}
    with app_running(env, log) as api:
        for path in ("/health", "/members"):  # a 500 on every route before
            response = api.get(path, headers=non_ascii)
            assert response.status_code == 200, response.text
            assert cleared(response), response.headers
        created = api.post("/members", json={"name": "Ada"})
        assert created.status_code == 201, created.text
        header = cookie_of(created)
        assert header is not None and "; Secure" not in header, header
        value = header.split(";")[0].partition("=")[2]
        position, written, _ = value.split(".")
        assert value == cookie_value(key, position, int(written))  # the secret's, no other
        assert f"Max-Age={COOKIE_MAX_AGE};" in header
        assert created.headers[HEADER] == value  # the same, for a client without a jar
        # The replica has replayed Ada (this process's latest write); Bob, written by another
        # program, is on the primary only: a reader with no cookie does not see him.
        replayed(pg, standby)
        servers.admin_execute(standby, "SELECT pg_wal_replay_pause()")
        try:
            servers.admin_execute(pg.target, "INSERT INTO library_members (name, joined_at) "
                                             "VALUES ('Bob', now())", database=dbname)
            after_bob = servers.admin_query(pg.target, read_your_writes.PRIMARY_POSITION)[0][0]
            with httpx.Client(base_url=str(api.base_url), timeout=30) as reader:
                for _ in range(100):
                    if "Bob" not in [m["name"] for m in reader.get("/members").json()]:
                        break
                    time.sleep(0.1)
                else:
                    raise AssertionError("the replica was never used")
            # A signed position past Bob: the primary, whether sent as the cookie or the header.
            genuine = cookie_value(key, after_bob, int(time.time()))
            api.cookies.clear()
            for sent in ({"cookie": f"{COOKIE}={genuine}"}, {HEADER: genuine}):
                assert "Bob" in [m["name"] for m in api.get("/members", headers=sent).json()]
            forged = cookie_value(key, "FFFFFFFF/0", int(time.time())).replace("FFFFFFFF/", "FFF/")
            stale = cookie_value(key, after_bob, int(time.time()) - COOKIE_MAX_AGE - 5)
            for bad in (forged, stale, "0/0.1.\xe9"):
                api.cookies.clear()
                response = api.get("/members", headers={
                    b"cookie": f"{COOKIE}={bad}".encode("latin-1")})
                assert response.status_code == 200, response.text
                assert cleared(response), (bad, response.headers)
                names = [m["name"] for m in response.json()]
                assert "Bob" not in names and "Ada" in names, bad  # the replica's view
                as_header = api.get("/members", headers={
                    HEADER.encode(): bad.encode("latin-1")})
                assert as_header.status_code == 200, as_header.text
                assert "Bob" not in [m["name"] for m in as_header.json()], bad
                assert cookie_of(as_header) is None  # a bad header clears no cookie
            # Over HTTPS (a proxy in front, as uvicorn trusts from 127.0.0.1): Secure.
            api.cookies.clear()
            secure = api.post("/members", json={"name": "Grace"},
                              headers={"x-forwarded-proto": "https"})
            assert secure.status_code == 201, secure.text
            header = cookie_of(secure)
            assert header is not None and header.endswith("; Secure"), header
            again = api.get("/health", headers={b"x-forwarded-proto": b"https", **non_ascii})
            assert cleared(again) and cookie_of(again).endswith("; Secure")  # type: ignore[union-attr]
        finally:
            servers.admin_execute(standby, "SELECT pg_wal_replay_resume()")
    output = log.read_text()
    assert "Traceback" not in output and " 500 " not in output, output


# --- the 409/422 log lines: the field and the kind, never the client's values ---------------


FORGED = '\nINFO:     127.0.0.1:1 - "GET /admin HTTP/1.1" 200 OK'


def test_a_clients_values_never_reach_the_log(api: httpx.Client, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    before = log.stat().st_size
    for name in ("x" * 40 + FORGED, "y" * 2_000_000):
        refused = api.post("/members", json={"name": name})
        assert refused.status_code == 422, refused.text[:200]
        assert refused.json() == {"detail": [{
            "loc": ["body", "name"], "msg": "the value is longer than 50 characters",
            "type": "string_too_long"}]}
    handle = "h\nINFO: forged"
    assert api.post("/members", json={"name": "Ada", "handle": handle}).status_code == 201
    again = api.post("/members", json={"name": "Ada", "handle": handle})
    assert again.status_code == 409
    assert again.json() == {"detail": [{
        "loc": ["body", "handle"], "msg": "a row with the same value exists already",
        "type": "unique"}]}
    text = log.read_text()
    assert log.stat().st_size - before < 5_000, log.stat().st_size - before
    assert "GET /admin" not in text and "forged" not in text and "yyyy" not in text, text
    refusals = [line for line in text.splitlines() if "refused" in line]
    too_long = ("WARNING:  POST /members: refused by the model: field name: the value is "
                "longer than 50 characters")
    duplicate = ("WARNING:  POST /members: A write was refused: a row with the same value "
                 "exists already (table library_members, field handle, constraint "
                 "library_members_handle_key)")
    assert refusals == [too_long, too_long, duplicate], text


def test_the_constraint_name_only_when_the_app_asks(
        pg: Postgres, dbname: str, caplog: pytest.LogCaptureFixture) -> None:
    """A unique violation from the real server, raised as Tortoise raises it: the body names
    the constraint only with ``show_constraint_names=True``; the log line escapes the path."""
    from fastapi import FastAPI
    from tortoise.exceptions import IntegrityError

    async def refused() -> asyncpg.PostgresError:
        connection = await pg.admin(dbname)
        try:
            await connection.execute("CREATE TABLE kinds (code text UNIQUE)")
            await connection.execute("INSERT INTO kinds VALUES ('a\nINFO: forged')")
            await connection.execute("INSERT INTO kinds VALUES ('a\nINFO: forged')")
        except asyncpg.PostgresError as exc:
            return exc
        finally:
            await connection.close()
        raise AssertionError("the write was not refused")

    duplicate = asyncio.run(refused())

    def body(show: bool) -> dict[str, object]:
        app = FastAPI()
        tortoise_neon.answer_database_errors(app, show_constraint_names=show)

        @app.post("/kinds/{name}")
        async def add(name: str) -> None:
            raise IntegrityError(duplicate) from duplicate

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.post("/kinds/a%1B[2KINFO:%20forged")

        response = asyncio.run(go())
        assert response.status_code == 409
        return response.json()

    with caplog.at_level(logging.WARNING, logger="tortoise_neon.asgi"):
        item = {"loc": ["body", "code"], "msg": "a row with the same value exists already",
                "type": "unique"}
        assert body(False) == {"detail": [item]}
        assert body(True) == {"detail": [{**item, "constraint": "kinds_code_key"}]}
    lines = [r.getMessage() for r in caplog.records if r.name == "tortoise_neon.asgi"]
    line = ("POST /kinds/a\\x1b[2KINFO: forged: A write was refused: a row with the same "
            "value exists already (table kinds, field code, constraint kinds_code_key)")
    assert lines == [line, line]
