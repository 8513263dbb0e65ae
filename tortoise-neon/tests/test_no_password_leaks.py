"""Nothing the app or the scripts send or print holds the database's password, or anything
derived from it: a role with a distinctive password of its own, and the failures a client or a
user can provoke (a wrong password, a database gone, a constraint, a value the model refuses, the
replica cookie's round trip, bad cookies); every response (status line, headers with Set-Cookie,
body), every log line and every script's output is searched for the password in each form it
could take (as is, percent-encoded, base64, hex, its hashes, and the cookie key the package once
derived from it)."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from pathlib import Path
from urllib.parse import quote

from tortoise_neon import read_your_writes
from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import app_running, create_tables, startup_failure
from tortoise_neon.testing.fixtures import Postgres, project, replayed, run_script, script_env

import httpx

PASSWORD = f"Leak-Canary-{uuid.uuid4().hex[:12]}"
WRONG = f"Wrong-Canary-{uuid.uuid4().hex[:12]}"


def forms(password: str, user: str, host: str, dbname: str) -> list[str]:
    """The password, and what could be derived from it and end up in an output."""
    raw = password.encode()
    digests = [getattr(hashlib, name)(raw) for name in ("md5", "sha1", "sha256", "sha512")]
    old_key = hashlib.sha256(  # replicas.py's cookie key before issue 27: sha256 of the password
        f"tortoise_neon.replicas\0{password}\0{user}\0{host}\0{dbname}".encode()).digest()
    found = [password, quote(password, safe=""), base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex(), old_key.hex(),
             base64.b64encode(old_key).decode().rstrip("=")]
    found += [d.hexdigest() for d in digests] + [d.hexdigest()[:20] for d in digests]
    found += [base64.b64encode(d.digest()).decode().rstrip("=") for d in digests]
    found += [hashlib.md5(raw + user.encode()).hexdigest()]  # PostgreSQL's md5 password
    return found


def shown(response: httpx.Response) -> str:
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    return f"{response.status_code}\n{head}\n{response.text}"


def test_no_output_holds_the_password_or_anything_derived_from_it(
        pg: Postgres, dbname: str, replica_url: str, standby: servers.PostgresServer,
        tmp_path: Path) -> None:
    if pg.server is None:
        raise AssertionError("unreachable: the standby fixture needs the local server")
    role = f"leak_{uuid.uuid4().hex[:8]}"
    servers.admin_execute(pg.target, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    try:
        servers.admin_execute(pg.target, f'ALTER DATABASE "{dbname}" OWNER TO {role}')
        servers.admin_execute(pg.target, f"GRANT ALL ON SCHEMA public TO {role}", database=dbname)
        url = pg.server.url(dbname, user=role, password=PASSWORD)
        replica = standby.url(dbname, user=role, password=PASSWORD)
        create_tables(pg, url)
        replayed(pg, standby)
        outputs = provoke(pg, dbname, url, replica, tmp_path)
    finally:
        servers.admin_execute(pg.target, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        servers.admin_execute(pg.target, f"DROP ROLE IF EXISTS {role}")
    secrets = (forms(PASSWORD, role, pg.server.host, dbname)
               + forms(WRONG, role, pg.server.host, dbname))
    assert len(outputs) == 18, len(outputs)  # every scenario ran
    for what, text in outputs:
        for secret in secrets:
            assert secret not in text, (what, secret)
    cookies = [v for what, text in outputs for v in re.findall(r"db_wal=([^;\s]+)", text)]
    assert cookies, "no cookie was set: the round trip was not tried"
    for value in cookies:  # nothing but the position and the time (no secret: unsigned)
        assert re.fullmatch(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}\.[0-9]{10}", value), value


def provoke(pg: Postgres, dbname: str, url: str, replica: str,
            tmp_path: Path) -> list[tuple[str, str]]:
    """Each failure, and the output it gave: (what, text)."""
    outputs: list[tuple[str, str]] = []
    env = script_env(pg, url, DATABASE_URL_REPLICA=replica)
    log = tmp_path / "uvicorn.log"
    with app_running(env, log) as api:

        def send(what: str, method: str, path: str, **kwargs: object) -> httpx.Response:
            response = api.request(method, path, **kwargs)  # type: ignore[arg-type]
            outputs.append((what, shown(response)))
            return response

        created = send("a write (sets the cookie)", "POST", "/members", json={"name": "Ada"})
        assert created.status_code == 201, created.text
        assert read_your_writes.COOKIE in created.headers.get("set-cookie", "")
        send("a read with the cookie", "GET", "/members")
        api.cookies.clear()
        for bad in ("0/0.1.\xe9", "0/1.1.0123456789abcdef0123", "FFFFFFFF/0.99999999999"):
            send(f"a bad cookie {bad!r}", "GET", "/members",
                 headers={"cookie": f"db_wal={bad}".encode("latin-1")})
        send("a duplicate", "POST", "/members", json={"name": "Bo", "handle": "bo"})
        send("a duplicate", "POST", "/members", json={"name": "Bo", "handle": "bo"})
        send("a value too long", "POST", "/members", json={"name": PASSWORD * 10})
        send("a body that is no JSON", "POST", "/members", content=b"{")
        send("no such route", "GET", "/nothing-here")
        send("the database's health", "GET", "/health/db")
        servers.admin_execute(pg.target, f'DROP DATABASE "{dbname}" WITH (FORCE)')
        for path in ("/health/db", "/members"):
            send("the database gone", "GET", path)
        send("a write with the database gone", "POST", "/members", json={"name": "Cy"})
    outputs.append(("the app's log", log.read_text()))
    wrong = url.replace(quote(PASSWORD, safe=""), quote(WRONG, safe=""))
    assert wrong != url
    lines = startup_failure(script_env(pg, wrong), tmp_path / "wrong.log")
    assert lines and "Password authentication failed" in lines[0], lines
    outputs.append(("the app started with a wrong password", (tmp_path / "wrong.log").read_text()))
    for what, script_url in (("a wrong password", wrong), ("the database gone", url)):
        result = run_script("members.py", "--name", "Ada", env=script_env(pg, script_url),
                            cwd=project())
        assert result.returncode == 1, result.stdout + result.stderr
        outputs.append((f"a script: {what}", result.stdout + result.stderr))
    return outputs
