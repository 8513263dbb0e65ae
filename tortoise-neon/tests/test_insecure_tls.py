"""No password in the clear to a remote host: ``sslmode=disable``, ``allow`` and ``prefer`` to a
host not on this machine are refused before anything is sent, unless DATABASE_ALLOW_INSECURE_TLS=1
says so; a refused TLS upgrade on the way to a remote host never advises sslmode=disable; the
app's start-up says how it connected.

127.0.0.2 stands for "remote": Linux routes all of 127/8 to the loopback, and the package counts
only localhost, 127.0.0.1 and ::1 as this machine. Two small peers listen there:

- ``PasswordCatcher``: answers ``N`` to an SSLRequest (TLS refused, as a server without TLS or
  a device on the way does), then asks for the password in clear text
  (AuthenticationCleartextPassword) and keeps what it gets: an attacker's view;
- ``WithoutTls``: the test PostgreSQL reached as a server with ``ssl = off`` is: ``N`` to an
  SSLRequest, everything else passed through to the real server (SCRAM, queries, results).
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tortoise_neon.database_settings import INSECURE_TLS, LOCAL_HOSTS, is_local_host
from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import app_running, create_tables, startup_failure
from tortoise_neon.testing.fixtures import Postgres, error_line, run_script, script_env

import pytest

REMOTE = "127.0.0.2"  # not this machine, as far as the package can tell: see the docstring
PASSWORD = servers.APP_PASSWORD
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
ALLOWED = {INSECURE_TLS: "1"}


class Peer:
    """A TCP server on ``host`` in a thread of its own, with its own event loop."""

    def __init__(self, host: str = REMOTE) -> None:
        self.host = host
        self.port = 0
        self.connections = 0
        self.tls_requests = 0  # SSLRequests answered N
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._accepted, self.host, 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def first_message(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> bytes:
        """The client's startup message, after answering N to its TLS (or GSS) requests."""
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
                self.tls_requests += code == SSL_REQUEST
                writer.write(b"N")  # what a server with ssl = off answers
                await writer.drain()
                continue
            return head + await reader.readexactly(length - 8)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class PasswordCatcher(Peer):
    """Refuses TLS, asks for the password in clear text, keeps it, refuses the login."""

    def __init__(self, host: str = REMOTE) -> None:
        super().__init__(host)
        self.passwords: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.first_message(reader, writer)
        writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        await writer.drain()
        kind, length = struct.unpack("!ci", await reader.readexactly(5))
        body = await reader.readexactly(length - 4)
        if kind == b"p":
            self.passwords.append(body.rstrip(b"\0"))
        fields = b"".join(code + text + b"\0" for code, text in (
            (b"S", b"FATAL"), (b"V", b"FATAL"), (b"C", b"28P01"),
            (b"M", b'password authentication failed for user "quickstart"')))
        writer.write(b"E" + struct.pack("!i", 4 + len(fields) + 1) + fields + b"\0")
        await writer.drain()


class WithoutTls(Peer):
    """The test PostgreSQL as a server without TLS: N to an SSLRequest, the rest passed on."""

    def __init__(self, server: servers.PostgresServer) -> None:
        super().__init__(REMOTE)
        self.server = server

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        startup = await self.first_message(reader, writer)
        up_reader, up_writer = await asyncio.open_connection(self.server.host, self.server.port)
        up_writer.write(startup)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def catcher() -> Iterator[PasswordCatcher]:
    peer = PasswordCatcher()
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture
def without_tls(local_pg: servers.PostgresServer) -> Iterator[WithoutTls]:
    peer = WithoutTls(local_pg)
    peer.start()
    yield peer
    peer.stop()


def url_at(peer: Peer, query: str, dbname: str = "neondb") -> str:
    return servers.console_url(peer.host, peer.port, dbname, query=query)


def refusal(mode: str) -> str:
    """The line for sslmode=``mode`` to 127.0.0.2 without DATABASE_ALLOW_INSECURE_TLS."""
    risk = ("the password and the data would cross the network unencrypted" if mode == "disable"
            else "anything on the way could turn TLS off or pose as the server, and read the "
                 "password")
    return (f"Error: DATABASE_URL has sslmode={mode} for {REMOTE}, a host not on this machine: "
            f"{risk}; use sslmode=require (TLS, certificate verified), or set "
            f"{INSECURE_TLS}=1 if you accept that risk (docs/connecting.md)")


def test_127_0_0_2_stands_for_a_remote_host() -> None:
    assert LOCAL_HOSTS == {"localhost", "127.0.0.1", "::1"}
    assert not is_local_host(REMOTE) and not is_local_host("db.example.com")
    assert all(is_local_host(host) for host in ("localhost", "127.0.0.1", "::1", "/run/pg"))


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
def test_weak_sslmode_to_a_remote_host_sends_nothing(catcher: PasswordCatcher, tmp_path: Path,
                                                      mode: str) -> None:
    result = run_script("members.py", env=script_env(None, url_at(catcher, f"sslmode={mode}")),
                        cwd=tmp_path)
    assert error_line(result) == refusal(mode)
    assert catcher.connections == 0 and catcher.passwords == []  # refused before connecting


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
def test_what_the_override_accepts(catcher: PasswordCatcher, tmp_path: Path, mode: str) -> None:
    """The risk DATABASE_ALLOW_INSECURE_TLS=1 takes, and why it is not the default: a peer that
    refuses TLS gets the password (and this peer would catch one if the refusal above went)."""
    env = script_env(None, url_at(catcher, f"sslmode={mode}"), **ALLOWED)
    line = error_line(run_script("members.py", env=env, cwd=tmp_path))
    assert catcher.passwords == [PASSWORD.encode()]
    if mode == "allow":  # asyncpg's allow: without TLS first; refused, it tries TLS: N again
        assert line == (f"Error: TLS was refused on the way to {REMOTE}:{catcher.port}: the "
                        "server, or a device between, answered that it does not speak TLS; check "
                        "the host and port in DATABASE_URL, and that the server has TLS on")
    else:
        assert line.startswith(
            f"Error: Password authentication failed for user quickstart at {REMOTE}: ")


@pytest.mark.parametrize("query", ["sslmode=require", "sslmode=verify-full", "ssl=true", ""])
def test_tls_refused_on_the_way_to_a_remote_host(catcher: PasswordCatcher, tmp_path: Path,
                                                 query: str) -> None:
    """Anyone on the way can answer N: the line never advises sslmode=disable, even with the
    override set (it allows, it does not advise)."""
    for env in (script_env(None, url_at(catcher, query)),
                script_env(None, url_at(catcher, query), **ALLOWED)):
        line = error_line(run_script("members.py", env=env, cwd=tmp_path))
        assert line == (
            f"Error: TLS was refused on the way to {REMOTE}:{catcher.port}: the server, or a "
            "device between, answered that it does not speak TLS, so nothing was sent (not the "
            "password either); check the host and port in DATABASE_URL, and that the server has "
            "TLS on")
    assert catcher.connections == 2 and catcher.tls_requests == 2 and catcher.passwords == []


def test_tls_refused_by_a_server_on_this_machine(tmp_path: Path) -> None:
    """On this machine the old advice stays: a local server without TLS is a common sight."""
    local = PasswordCatcher("127.0.0.1")
    local.start()
    try:
        url = url_at(local, "sslmode=require")
        line = error_line(run_script("members.py", env=script_env(None, url), cwd=tmp_path))
    finally:
        local.stop()
    assert line == ("Error: 127.0.0.1 does not offer TLS: for a trusted server on your own "
                    "network, add sslmode=disable to DATABASE_URL")
    assert local.passwords == []


@pytest.mark.parametrize(("mode", "said"), [
    ("disable", "TLS off: not encrypted"),
    ("prefer", "TLS if the server offers it: certificate not verified"),
])
def test_with_the_override_a_server_without_tls_is_used_and_said(
        pg: Postgres, without_tls: WithoutTls, dbname: str, tmp_path: Path, mode: str,
        said: str) -> None:
    url = url_at(without_tls, f"sslmode={mode}", dbname)
    result = run_script("members.py", env=script_env(pg, url, **ALLOWED), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        f"Connected to PostgreSQL at {REMOTE}:{without_tls.port}/{dbname} as quickstart ({said}; "
        f"a host not on this machine: allowed by {INSECURE_TLS})")
    assert "Added member" in result.stdout
    assert without_tls.connections >= 1
    assert without_tls.tls_requests == (without_tls.connections if mode == "prefer" else 0)


def test_the_apps_start_up_says_how_it_connected(tls_pg: Postgres, dbname: str,
                                                 tmp_path: Path) -> None:
    url = tls_pg.url(dbname)
    create_tables(tls_pg, url)
    log = tmp_path / "uvicorn.log"
    with app_running(script_env(tls_pg, url), log) as client:
        client.get("/members").raise_for_status()  # a second connection, maybe: said once
    parts = urlsplit(url)
    lines = [line for line in log.read_text().splitlines() if "Connected to" in line]
    said = (f"WARNING:  Connected to PostgreSQL at {parts.hostname}:{parts.port}/{dbname} as "
            f"{parts.username} (TLS on, certificate verified)")
    assert lines == [said], log.read_text()


def test_the_app_refuses_a_weak_sslmode_to_a_remote_host(catcher: PasswordCatcher,
                                                          tmp_path: Path) -> None:
    env = script_env(None, url_at(catcher, "sslmode=prefer"))
    lines = startup_failure(env, tmp_path / "uvicorn.log")
    assert lines == [f"ERROR:    {refusal('prefer')}", "ERROR:    Application startup failed. Exiting."]
    assert catcher.connections == 0


def test_the_app_with_the_override_says_so_at_start_up(pg: Postgres, without_tls: WithoutTls,
                                                       dbname: str, tmp_path: Path) -> None:
    create_tables(pg, pg.url(dbname))
    log = tmp_path / "uvicorn.log"
    url = url_at(without_tls, "sslmode=disable", dbname)
    with app_running(script_env(pg, url, **ALLOWED), log) as client:
        assert client.get("/members").status_code == 200
    lines = [line for line in log.read_text().splitlines() if "Connected to" in line]
    said = (f"WARNING:  Connected to PostgreSQL at {REMOTE}:{without_tls.port}/{dbname} as "
            f"quickstart (TLS off: not encrypted; a host not on this machine: allowed by "
            f"{INSECURE_TLS})")
    assert lines == [said], log.read_text()
