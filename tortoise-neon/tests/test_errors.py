"""Bad input gets one clear line: exit 1, no traceback, never the password, nothing written."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tortoise_neon.testing import servers
from tortoise_neon.testing.fixtures import (
    Postgres,
    error_line,
    no_table,
    run_script,
    script_env,
    unreached_url,
)

import pytest

PASSWORD = servers.APP_PASSWORD
TABLE = "library_members"




@pytest.mark.parametrize(("url", "password", "expected"), [
    # malformed: the port is not a number
    ("postgresql://alex:secret@ep-cool.neon.tech:5432x/neondb?sslmode=require", "secret",
     ["malformed", "port"]),
    # unknown scheme
    ("mysql://alex:secret@ep-cool.neon.tech/neondb", "secret", ["mysql://", "postgresql://"]),
    # a password typed with "@" and "#", not percent-encoded ("#" starts a URL's fragment)
    ("postgresql://alex:p@ss#1@ep-cool.neon.tech/neondb", "p@ss#1",
     ["percent-encode special characters in the password", "@ as %40", "# as %23"]),
    # the psql command from Neon's Connect dialog, pasted whole
    ("psql 'postgresql://alex:secret@ep-cool.neon.tech/neondb?sslmode=require'", "secret",
     ["psql command", "paste only the URL"]),
])
def test_bad_url_is_refused_before_connecting(tmp_path: Path, url: str, password: str,
                                              expected: list[str]) -> None:
    line = error_line(run_script("members.py", env=script_env(None, url), cwd=tmp_path),
                      password=password)
    assert all(word in line for word in expected), line
    assert "ss#1" not in line and "@ss" not in line  # no piece of a password cut in two
    assert not list(tmp_path.iterdir())


def test_wrong_password(pg: Postgres, dbname: str, tmp_path: Path) -> None:
    url = pg.url(dbname, password="Wrong-Password-42")
    line = error_line(run_script("members.py", env=script_env(pg, url), cwd=tmp_path),
                      password="Wrong-Password-42")
    assert f"Password authentication failed for user {urlsplit(url).username}" in line
    assert no_table(pg, dbname, TABLE)


def test_unknown_database(pg: Postgres, tmp_path: Path) -> None:
    url = pg.url("no_such_database_here")
    line = error_line(run_script("members.py", env=script_env(pg, url), cwd=tmp_path))
    assert "Database no_such_database_here does not exist" in line


def test_unknown_host(tmp_path: Path) -> None:
    url = unreached_url("neondb", host="ep-typo-in-host.invalid")
    started = time.monotonic()
    line = error_line(run_script("members.py", env=script_env(None, url), cwd=tmp_path))
    assert "Cannot find the host ep-typo-in-host.invalid" in line
    assert time.monotonic() - started < 15  # not retried


@pytest.mark.parametrize(("host", "query", "limit"), [
    ("localhost", "", 5),  # localhost: maybe two addresses, both refused
    ("127.0.0.1", "&connect_timeout=3", 3),  # a shorter deadline wins
])
def test_nothing_listening(tmp_path: Path, host: str, query: str, limit: int) -> None:
    """A wrong port: refused at once. Neon's proxy always listens, so refusals are given up
    after 5 s (a local server still starting listens within that), not the 30 s deadline."""
    url = unreached_url("neondb", host=host, port=servers.free_port()) + query
    started = time.monotonic()
    result = run_script("members.py", env=script_env(None, url), cwd=tmp_path)
    elapsed = time.monotonic() - started
    line = error_line(result)
    assert f"within {limit} s (connection refused" in line
    waiting = result.stderr.splitlines()[0]  # one line said it waited, naming host and port
    assert waiting.startswith(f"Database at {host}:") and "connection refused" in waiting
    assert len(result.stderr.splitlines()) == 2, result.stderr
    assert limit - 0.5 < elapsed < limit + 4


def test_tls_verification_failure(tls_pg: Postgres, local_pg: servers.PostgresServer,
                                  dbname: str, tmp_path: Path) -> None:
    # Without the test CA (SSL_CERT_FILE), the server's certificate is not trusted.
    env = script_env(None, tls_pg.url(dbname))
    env.pop("SSL_CERT_FILE", None)
    started = time.monotonic()
    line = error_line(run_script("members.py", env=env, cwd=tmp_path))
    assert "TLS certificate verification failed for 127.0.0.1" in line
    assert "sslrootcert=" in line
    assert time.monotonic() - started < 15  # not retried
    assert no_table(tls_pg, dbname, TABLE)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_host_that_never_answers_times_out(silent_server: int, tmp_path: Path) -> None:
    # the default deadlines: 10 s a try, 30 s in all
    url = unreached_url("neondb", host="127.0.0.1", port=silent_server)
    started = time.monotonic()
    result = run_script("members.py", env=script_env(None, url), cwd=tmp_path)
    elapsed = time.monotonic() - started
    line = error_line(result)
    assert "within 30 s (timed out" in line
    assert "not ready (timed out)" in result.stderr
    assert len(result.stderr.splitlines()) == 2, result.stderr  # one waiting line, one error
    assert 25 < elapsed < 45  # well under a minute; attempts of 10 s each
