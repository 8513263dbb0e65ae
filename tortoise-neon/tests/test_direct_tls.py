"""Direct TLS (``sslnegotiation=direct``) against each test server, and Neon's default.

Direct TLS starts TLS at once instead of asking first (SSLRequest): one round trip less.
PostgreSQL 17+ takes it (with ALPN ``postgresql``, which the database package sends); before 17
the server hangs up on the TLS hello. Hosts under neon.tech get direct TLS by default and fall
back once to the standard negotiation if the handshake fails; ``sslnegotiation=postgres`` turns
it off, and an explicit ``sslnegotiation=direct`` never falls back.

A Neon-shaped name (tortoise_neon/testing/hostnames.py) leads to each test server through the counting proxy
(tortoise_neon/testing/proxy.py), which shows how each connection began: ``ClientHello`` (direct TLS) or
``SSLRequest`` (the standard negotiation).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import tortoise_neon
from tortoise_neon.testing import hostnames, servers
from tortoise_neon.testing.fixtures import (
    Postgres,
    error_line,
    missing,
    no_table,
    project_config,
    query,
    run_script,
    script_env,
)
from tortoise_neon.testing.proxy import ProxyThread, Trace

import pytest
from tortoise import Tortoise, connections
from tortoise.transactions import in_transaction

CONSOLE = "sslmode=require&channel_binding=require"  # Neon's console string
FALLBACK = ("Direct TLS failed at {host} ({reason}): using the standard TLS negotiation "
            "instead (add sslnegotiation=postgres to DATABASE_URL to skip the attempt)")


@pytest.fixture
def neon_host() -> str:
    """A host name under neon.tech that resolves to this machine."""
    why = hostnames.ensure()
    if why:
        missing(why)
    return hostnames.DIRECT


def begun(traces: list[Trace]) -> list[str]:
    """How each proxied connection began: ClientHello (direct TLS) or SSLRequest."""
    return [t.flights[0].client[0] if t.flights and t.flights[0].client else "(nothing)"
            for t in traces]


def test_explicit_direct_tls(tls_pg: Postgres, local_pg: servers.PostgresServer, dbname: str,
                             tmp_path: Path) -> None:
    """Both scripts work with sslnegotiation=direct on PostgreSQL 17+; before 17 it is one
    line at once, not retried."""
    env = script_env(tls_pg, local_pg.url(dbname, direct=True))
    if local_pg.direct_tls:
        for script in ("members.py", "ledger.py"):
            result = run_script(script, env=env, cwd=tmp_path)
            assert result.returncode == 0 and not result.stderr, result.stderr
        assert "without ALPN" not in local_pg.log()
        assert query(tls_pg, dbname, "SELECT count(*) FROM library_members")[0][0] == 2
        return
    started = time.monotonic()
    line = error_line(run_script("members.py", env=env, cwd=tmp_path))
    assert line.startswith("Error: Direct TLS failed at 127.0.0.1 (")
    assert line.endswith("remove sslnegotiation=direct from DATABASE_URL")
    assert time.monotonic() - started < 15  # not retried
    assert no_table(tls_pg, dbname, "library_members")


@pytest.mark.parametrize(("negotiation", "before_17", "from_17"), [
    # the default for a Neon host: direct TLS; before 17, one failed attempt, then the standard
    ("", ["ClientHello", "SSLRequest"], ["ClientHello"]),
    ("&sslnegotiation=postgres", ["SSLRequest"], ["SSLRequest"]),  # turned off
    ("&sslnegotiation=direct", ["ClientHello"], ["ClientHello"]),  # explicit: never falls back
])
def test_neon_host(tls_pg: Postgres, local_pg: servers.PostgresServer, dbname: str,
                   neon_host: str, tmp_path: Path, negotiation: str, before_17: list[str],
                   from_17: list[str]) -> None:
    with ProxyThread(local_pg.host, local_pg.port) as proxy:
        url = local_pg.url(dbname, host=neon_host, port=proxy.port, query=CONSOLE + negotiation)
        result = run_script("members.py", env=script_env(tls_pg, url), cwd=tmp_path)
        traces = proxy.settle()
    assert begun(traces) == (from_17 if local_pg.direct_tls else before_17)
    if local_pg.direct_tls or negotiation == "&sslnegotiation=postgres":
        assert result.returncode == 0 and not result.stderr, result.stderr
    elif negotiation == "":  # fell back, said so in one line, and went on
        assert result.returncode == 0, result.stderr
        [line] = result.stderr.splitlines()
        prefix, _, suffix = FALLBACK.format(host=neon_host, reason="\0").partition("\0")
        assert line.startswith(prefix) and line.endswith(suffix), line
        assert "Added member #1" in result.stdout
    else:
        line = error_line(result)
        assert line.startswith(f"Error: Direct TLS failed at {neon_host} (")
        assert line.endswith("remove sslnegotiation=direct from DATABASE_URL")


def test_a_pool_falls_back_once(tls_pg: Postgres, local_pg: servers.PostgresServer,
                                dbname: str, neon_host: str,
                                caplog: pytest.LogCaptureFixture) -> None:
    """Three connections at once from one pool to a Neon host: before 17, the first tries
    direct TLS and falls back (one line in the package's log); the others use the standard
    negotiation at once."""
    with ProxyThread(local_pg.host, local_pg.port) as proxy:
        settings = tortoise_neon.parse_database_url(
            local_pg.url(dbname, host=neon_host, port=proxy.port))
        assert settings.direct_tls and settings.direct_tls_fallback
        settings = replace(settings, sslrootcert=str(local_pg.ca_path))

        async def busy() -> None:
            async with in_transaction() as connection:
                await connection.execute_query("SELECT pg_sleep(0.3)")

        async def go() -> None:
            await Tortoise.init(config=project_config(settings))
            try:
                await connections.get("default").execute_query("SELECT 1")
                await asyncio.gather(busy(), busy(), busy())
            finally:
                await Tortoise.close_connections()

        asyncio.run(go())
        traces = proxy.settle()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("tortoise_neon")]
    if local_pg.direct_tls:
        assert begun(traces) == ["ClientHello"] * 3 and not lines
    else:
        assert begun(traces) == ["ClientHello"] + ["SSLRequest"] * 3
        assert len(lines) == 1 and lines[0].startswith("Direct TLS failed at"), lines
