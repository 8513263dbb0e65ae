"""The Neon-faithful proxy itself, seen through plain asyncpg: does it behave as Neon's does?"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from tortoise_neon.testing import hostnames, neon_proxy, servers
from tortoise_neon.testing.fixtures import run
from tortoise_neon.testing.neon_proxy import NeonProxy

import asyncpg
import pytest


def context(proxy_ca: str, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=proxy_ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def connect(neon: NeonProxy, ca: str, host: str = hostnames.POOLED,
                  database: str = "postgres", **kwargs: Any) -> asyncpg.Connection:
    options: dict[str, Any] = {"user": servers.APP_USER, "password": servers.APP_PASSWORD,
                                  "ssl": context(ca)}
    options.update(kwargs)
    return await asyncpg.connect(host=host, port=neon.port, database=database, **options)


@pytest.fixture
def ca(local_pg: servers.PostgresServer) -> str:
    return str(local_pg.ca_path)


def refusal(neon: NeonProxy, ca: str, **kwargs: Any) -> asyncpg.PostgresError:
    async def go() -> None:
        await connect(neon, ca, **kwargs)

    with pytest.raises(asyncpg.PostgresError) as caught:
        run(go())
    return caught.value


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"database": "no_such_db"}, 'database "no_such_db" does not exist'),  # the compute's, re-sent
    ({"password": "Wrong-Password-42"}, "password authentication failed for user 'quickstart'"),
    ({"host": hostnames.TYPO}, "password authentication failed for user 'quickstart'"),
    ({"user": "nobody"}, "password authentication failed for user 'nobody'"),  # unknown role
    ({"ssl": False}, neon_proxy.INSECURE),
    ({"host": "127.0.0.1"}, neon_proxy.NO_ENDPOINT),  # no SNI for an address, no option
])
def test_errors_before_ready_are_xx000_with_the_text_only(neon: NeonProxy, ca: str,
                                                          kwargs: dict[str, object],
                                                          message: str) -> None:
    error = refusal(neon, ca, **kwargs)
    assert type(error) is asyncpg.InternalServerError and error.sqlstate == "XX000"
    assert str(error) == message
    assert error.detail is None and error.hint is None


def test_control_plane_failure_for_the_first_attempts_only(neon: NeonProxy, ca: str) -> None:
    endpoint = neon.endpoints[hostnames.ENDPOINT]
    endpoint.failure, endpoint.failures = neon_proxy.TOO_MANY_CONNECTIONS, 1
    assert str(refusal(neon, ca)) == neon_proxy.TOO_MANY_CONNECTIONS

    async def works() -> int:
        conn = await connect(neon, ca)
        try:
            return int(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    assert run(works()) == 1 and endpoint.attempts == 2


def test_only_some_startup_parameters_reach_the_compute(neon: NeonProxy, ca: str) -> None:
    """The endpoint in options (no SNI), direct TLS with ALPN; extra parameters are dropped."""

    async def go() -> list[str]:
        conn = await connect(neon, ca, host="127.0.0.1", direct_tls=True,
                             ssl=context(ca, ["postgresql"]), server_settings={
                                 "application_name": "proxy-test", "search_path": "dropped",
                                 "options": f"endpoint={hostnames.ENDPOINT} -c work_mem=5MB"})
        try:
            return [await conn.fetchval(f"SHOW {name}")
                    for name in ("application_name", "work_mem", "search_path")]
        finally:
            await conn.close()

    assert run(go()) == ["proxy-test", "5MB", '"$user", public']


def test_an_alpn_other_than_postgresql_is_refused(neon: NeonProxy, ca: str) -> None:
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        run(connect(neon, ca, direct_tls=True, ssl=context(ca, ["http/1.1"])))


@pytest.mark.parametrize("host", [hostnames.POOLED, hostnames.DIRECT])
def test_suspend_closes_open_connections_neons_way(neon: NeonProxy, ca: str, host: str) -> None:
    async def go() -> None:
        conn = await connect(neon, ca, host=host)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            neon.endpoints[hostnames.ENDPOINT].suspend_after = 0  # at the next query
            await conn.fetchval("SELECT 2")
        finally:
            await conn.close()

    with pytest.raises(asyncpg.ConnectionDoesNotExistError) as caught:
        run(go())
    fatal = caught.value.__cause__
    if host == hostnames.POOLED:  # PgBouncer is killed: a bare close, no message at all
        assert fatal is None
    else:  # the compute's own FATAL reached the client before the close
        assert isinstance(fatal, asyncpg.AdminShutdownError) and fatal.sqlstate == "57P01"
        assert str(fatal) == "terminating connection due to administrator command"
    assert neon.endpoints[hostnames.ENDPOINT].suspended


@pytest.mark.parametrize("before", ["127.0.0.1 localhost\n", "127.0.0.1 localhost", ""])
def test_the_hosts_block_comes_out_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         before: str) -> None:
    """As root the suite adds its names to /etc/hosts; at the session's end the file is as it
    was (here on a copy: the names cannot resolve through it, so ensure() says so)."""
    hosts = tmp_path / "hosts"
    hosts.write_text(before)
    monkeypatch.setattr(hostnames.os, "geteuid", lambda: 0, raising=False)
    names = ("ep-nowhere-a0a0a0a0.invalid",)  # resolves nowhere, whatever /etc/hosts holds
    assert hostnames.ensure(names, hosts_file=hosts) is not None  # written, not what resolves
    assert hostnames.BEGIN in hosts.read_text() and hosts.read_text().startswith(before)
    hostnames.ensure(names, hosts_file=hosts)  # again: still one block
    assert hosts.read_text().count(hostnames.BEGIN) == 1
    hostnames.restore()
    assert hosts.read_text() == before
