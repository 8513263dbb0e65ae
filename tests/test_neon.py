"""Neon as it really behaves: the scripts and the app through the Neon-faithful proxy.

The proxy (tests/neon_proxy.py) sits in front of the test PostgreSQL (and, for the pooled
``-pooler`` host, a real PgBouncer in transaction mode) and answers as Neon's proxy does: its
own failures as SQLSTATE XX000 with the message text only, cold starts, suspends.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import hostnames, servers
from tests.conftest import Postgres, neon_url, query, run_script, script_env
from tests.neon_proxy import NeonProxy, Target

MAIN_ENDPOINT = hostnames.ENDPOINT


def assert_clean(result) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr
    assert servers.APP_PASSWORD not in result.stdout + result.stderr


@pytest.fixture
def neon_pooler(neon: NeonProxy, pgbouncer: servers.PgBouncer,
                local_pg: servers.PostgresServer) -> Iterator[NeonProxy]:
    """The proxy, with -pooler endpoints going through PgBouncer (transaction mode), as Neon's."""
    neon.pooler = Target("127.0.0.1", pgbouncer.port,
                         ssl.create_default_context(cafile=str(local_pg.ca_path)))
    yield neon


@pytest.mark.parametrize("host", [hostnames.POOLED, hostnames.DIRECT])
def test_both_scripts_with_neons_console_string(neon_pooler: NeonProxy, pg: Postgres,
                                                dbname: str, tmp_path: Path, host: str) -> None:
    env = script_env(pg, neon_url(neon_pooler, dbname, host))
    transactions = run_script("transactions.py", env=env, cwd=tmp_path)  # a fresh database
    assert_clean(transactions)
    assert "Rows saved by this run: 0 for 'Alice (run " in transactions.stdout
    assert ", 1 for 'Bob (run " in transactions.stdout

    first = run_script("main.py", env=env, cwd=tmp_path)
    assert_clean(first)
    pooled = "; pooled endpoint; statement cache off" if host == hostnames.POOLED else ""
    assert (f"Connected to PostgreSQL at {host}:{neon_pooler.port}/{dbname} as quickstart "
            f"(TLS on, certificate verified{pooled})") in first.stdout
    assert "2 users in total; newest 2:" in first.stdout

    second = run_script("main.py", "--name", "Ada Lovelace", env=env, cwd=tmp_path)
    assert_clean(second)
    assert "3 users in total; newest 3:" in second.stdout
    assert second.stdout.index("Ada Lovelace") < second.stdout.index("Neon User")
    names = [r["name"] for r in query(pg, dbname, "SELECT name FROM demo_users ORDER BY id")]
    assert names[1:] == ["Neon User", "Ada Lovelace"] and names[0].startswith("Bob (run ")
    assert neon_pooler.endpoints[MAIN_ENDPOINT].attempts >= 3  # all of it through the proxy
