"""Round trips on the wire and statements on the server: main.py and transactions.py stay lean.

On Neon every network round trip costs 1-100 ms, so we count them. Each script runs once, as a
user runs it, through tortoise_neon/testing/proxy.py's counting proxy (it says how round trips are counted); the
server logs every statement executed in the test's database (``log_statement = 'all'``) and the
script's connection and disconnection.

The proxy delays the server's traffic by a few milliseconds. With no delay at all, a client that
closes without waiting (PromptCloseConnection) can still see the server's goodbye arrive before
its own close completes, and the count would include a round trip that no real network costs
(about a third of runs). With the delay the count is exact: a client that did wait for the
server is counted, as the last test shows with plain asyncpg's close.

Each test runs against every test server, in Neon's console form. PostgreSQL 17+ takes direct
TLS, so there the URL adds ``sslnegotiation=direct``: no SSLRequest, one round trip less.
PostgreSQL before 18 offers one TLS curve (P-256) while Python's client sends an X25519 key share
first: the server answers with a HelloRetryRequest, one more round trip, allowed on top of the
budget there; PostgreSQL 18 offers X25519 too, and must need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tortoise_neon.testing import pglog, servers
from tortoise_neon.testing.fixtures import Postgres, run_script, script_env
from tortoise_neon.testing.proxy import ProxyThread, Trace

import pytest

from checks.budgets import BUDGETS, FIRST_RUN
from checks.template import ROOT

DELAY_MS = 100.0  # generous: a busy machine must not split one flight into two


@dataclass
class Observed:
    stdout: str
    traces: list[Trace]
    sessions: list[pglog.Session]

    def describe(self) -> str:
        lines = [line for t in self.traces for line in t.breakdown()]
        lines += [s for session in self.sessions for s in session.statements]
        return "\n".join(lines)


def run_counted(script: str, pg: Postgres, server: servers.PostgresServer, dbname: str,
                cwd: Path) -> Observed:
    """Run ``script`` through the counting proxy, with direct TLS where the server takes it;
    what the wire and the server log saw."""
    servers.admin_execute(server, f"ALTER DATABASE \"{dbname}\" SET log_statement = 'all'")
    offset = pglog.log_size(server.logfile)
    with ProxyThread(server.host, server.port, delay_ms=DELAY_MS) as proxy:
        url = server.url(dbname, port=proxy.port, direct=server.direct_tls)
        result = run_script(script, env=script_env(pg, url), cwd=cwd)
        traces = proxy.settle()
    assert result.returncode == 0, result.stderr
    sessions = pglog.sessions_of(server.logfile, offset, dbname, servers.APP_USER)
    return Observed(result.stdout, traces, sessions)


def assert_negotiation(trace: Trace, server: servers.PostgresServer, observed: Observed) -> None:
    """Direct TLS on 17+ (no SSLRequest); a HelloRetryRequest before 18 at most, none on 18."""
    sent = [label for flight in trace.flights for label in flight.client]
    assert ("SSLRequest" in sent) is not server.direct_tls, observed.describe()
    assert trace.hello_retries <= (1 if server.major < 18 else 0), observed.describe()


def assert_clean_session(observed: Observed) -> pglog.Session:
    assert len(observed.sessions) == 1, (
        "one connection: each extra one costs a whole TCP + TLS + SCRAM handshake\n"
        + observed.describe())
    [session] = observed.sessions
    # a normal goodbye: the server read Terminate (no "unexpected EOF on client connection",
    # no "could not receive data from client", no SSL error)
    assert session.disconnected, session.entries
    assert not session.problems, session.problems
    return session


@pytest.mark.parametrize("script", sorted(BUDGETS))
def test_round_trips_and_statements(script: str, tls_pg: Postgres,
                                    local_pg: servers.PostgresServer, dbname: str,
                                    tmp_path: Path) -> None:
    # Migrations you add cost what their DDL costs on the first run: its budget is the shipped
    # project's; every later run keeps the budget whatever you add.
    migrations = sorted(path.name for path in (ROOT / "migrations").glob("[0-9]*.py"))
    shipped = migrations == ["0001_initial.py"]
    for run, (extra, extra_statements) in (("first", FIRST_RUN), ("second", (0, 0))):
        observed = run_counted(script, tls_pg, local_pg, dbname, tmp_path)
        if run == "first" and not shipped:
            continue
        budget, statement_budget = BUDGETS[script]
        budget, statement_budget = budget + extra, statement_budget + extra_statements

        assert len(observed.traces) == 1, observed.describe()
        [trace] = observed.traces
        assert_negotiation(trace, local_pg, observed)
        if local_pg.direct_tls:
            budget -= 1
        assert trace.round_trips - trace.hello_retries <= budget, (
            f"{script}, {run} run: {trace.round_trips} round trips ({trace.hello_retries} "
            f"HelloRetryRequest), budget {budget}:\n{observed.describe()}")
        assert not trace.waited_for_hangup, "the script waited for the server to hang up"

        session = assert_clean_session(observed)
        assert len(session.statements) <= statement_budget, "\n".join(session.statements)
        assert "Connected to PostgreSQL" in observed.stdout and "TLS on" in observed.stdout


def test_counter_sees_a_close_that_waits(tls_pg: Postgres, local_pg: servers.PostgresServer,
                                         dbname: str, tmp_path: Path) -> None:
    """The instrument itself: plain asyncpg's close() waits for the server to hang up (one
    round trip that PromptCloseConnection saves), and the proxy counts it: exactly 12 (11 with
    direct TLS)."""
    observed = run_counted(str(ROOT / ".ci/bench/plain_asyncpg.py"), tls_pg, local_pg, dbname, tmp_path)
    [trace] = observed.traces
    assert_negotiation(trace, local_pg, observed)
    # TCP, SSLRequest, TLS, SCRAM 3, CREATE TABLE, INSERT 2, SELECT 2, and the wait at close
    expected = 11 if local_pg.direct_tls else 12
    assert trace.round_trips - trace.hello_retries == expected, observed.describe()
    assert len(assert_clean_session(observed).statements) == 3
