"""Neon as it really behaves: the scripts and the app through the Neon-faithful proxy.

The proxy (tortoise_neon/testing/neon_proxy.py) sits in front of the test PostgreSQL (and, for the pooled
``-pooler`` host, a real PgBouncer in transaction mode) and answers as Neon's proxy does: its
own failures as SQLSTATE XX000 with the message text only, cold starts, suspends.
"""

from __future__ import annotations

import time
from pathlib import Path

from tortoise_neon.database_settings import INSECURE_TLS
from tortoise_neon.testing import hostnames, neon_proxy, servers
from tortoise_neon.testing.apps import app_running, create_tables
from tortoise_neon.testing.fixtures import (
    Postgres,
    neon_url,
    query,
    run_script,
    script_env,
    through_pgbouncer,
)
from tortoise_neon.testing.neon_proxy import NeonProxy

import pytest

MAIN_ENDPOINT = hostnames.ENDPOINT


def assert_clean(result) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr
    assert servers.APP_PASSWORD not in result.stdout + result.stderr



@pytest.mark.parametrize("host", [hostnames.POOLED, hostnames.DIRECT])
def test_both_scripts_with_neons_console_string(neon: NeonProxy, pg: Postgres, dbname: str,
                                                tmp_path: Path, host: str,
                                                request: pytest.FixtureRequest,
                                                local_pg: servers.PostgresServer) -> None:
    if host == hostnames.POOLED:
        through_pgbouncer(neon, request, local_pg)
    env = script_env(pg, neon_url(neon, dbname, host))
    ledger = run_script("ledger.py", env=env, cwd=tmp_path)  # a fresh database
    assert_clean(ledger)
    assert "rolled back\ncommitted\nsaved: ['kept " in ledger.stdout  # only the committed row

    first = run_script("members.py", env=env, cwd=tmp_path)
    assert_clean(first)
    pooled = "; pooled endpoint" if host == hostnames.POOLED else ""  # the cache stays on
    assert (f"Connected to PostgreSQL at {host}:{neon.port}/{dbname} as quickstart "
            f"(TLS on, certificate verified{pooled})") in first.stdout
    assert "2 members; newest: Member, kept " in first.stdout

    second = run_script("members.py", "--name", "Ada Lovelace", env=env, cwd=tmp_path)
    assert_clean(second)
    assert "3 members; newest: Ada Lovelace, Member, kept " in second.stdout
    names = [r["name"] for r in query(pg, dbname, "SELECT name FROM library_members ORDER BY id")]
    assert names[1:] == ["Member", "Ada Lovelace"] and names[0].startswith("kept ")
    assert neon.endpoints[MAIN_ENDPOINT].attempts >= 3  # all of it through the proxy


# --- every Neon failure: one line, exit 1, nothing written; retried only when waiting helps --


def error_line(result) -> str:  # type: ignore[no-untyped-def]
    """The one ``Error:`` line of a failed run (after any "not ready" lines), checked in full."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and servers.APP_PASSWORD not in output
    assert "s3cret" not in output and "Added member" not in result.stdout
    [line] = [x for x in result.stderr.splitlines() if " not ready (" not in x]
    assert line.startswith("Error: ")
    return line[len("Error: "):]


def no_table(pg: Postgres, dbname: str) -> bool:
    return not query(pg, dbname, "SELECT 1 FROM pg_tables WHERE tablename = 'library_members'")


P, D, T = hostnames.POOLED, hostnames.DIRECT, hostnames.TYPO
EP = MAIN_ENDPOINT
FINAL = [  # (failure, URL changes, the line a user sees)
    (None, {"password": "Wrong-Password-42"},
     (f"Password authentication failed for user quickstart at {P}: copy the connection string "
      "again from Neon's Connect dialog; on Neon this also means an unknown role or a typo in the "
      f"endpoint id ({EP})")),
    (None, {"host": T},  # a typo in the endpoint id: the name resolves, Neon knows no such id
     (f"Password authentication failed for user quickstart at {T}: copy the connection string "
      "again from Neon's Connect dialog; on Neon this also means an unknown role or a typo in the "
      "endpoint id (ep-quiet-lake-a1b2c3d5)")),
    (None, {"dbname": "neondb"},
     (f"Database neondb does not exist at {P}: fix the name after the host in DATABASE_URL "
      "(Neon's default is neondb)")),
    (None, {"host": "127.0.0.1"},  # no SNI for an address, no options=endpoint%3D...
     ("Neon cannot tell which endpoint 127.0.0.1 means (Endpoint ID is not specified): use the "
      "host name from Neon's Connect dialog (ep-....neon.tech), or add "
      "options=endpoint%3D<endpoint-id> to DATABASE_URL (the host's first part)")),
    (None, {"query": f"sslmode=require&options=endpoint%3D{EP}"},  # SNI says ep-...-pooler
     (f"Inconsistent project name inferred from SNI ('{EP}-pooler') and project option ('{EP}')"
      f": the endpoint in options=endpoint%3D... must be the host's first part ({EP}-pooler); "
      "remove the option, the host name is enough")),
    (None, {"query": "sslmode=disable", "insecure": "1"},  # DATABASE_ALLOW_INSECURE_TLS=1
      f"{P} requires TLS: remove sslmode=disable from DATABASE_URL"),
    ("DISABLED", {"host": "127.0.0.1", "query": f"sslmode=require&options=endpoint%3D{EP}"},
     (f"Neon endpoint {EP} is disabled (Control plane request failed: endpoint is disabled): it "
      "accepts no connections until it is enabled again; check its compute and your plan's "
      "limits in the Neon console")),
    ("NOT_FOUND", {},
     (f"Neon has no endpoint {EP} (Control plane request failed: endpoint cannot be found): its "
      "branch or project may have been deleted; copy the connection string again from the "
      "Connect dialog")),
    ("QUOTA", {"host": D},
     (f"Neon refused endpoint {EP}: Your project has exceeded the data transfer quota. Upgrade "
      "your plan to increase limits (see Billing and usage in the Neon console)")),
]
RETRIED = [  # (failure, host, the line once the deadline (connect_timeout=2) has passed)
    ("NOT_WOKEN", P,
     (f"Neon could not wake the compute of endpoint {EP} within 2 s (Couldn't connect to compute "
      "node; {n} attempts): check the compute's state in the Neon console and Neon's status "
      "page, then run the command again")),
    ("TOO_MANY_ATTEMPTS", D,
     (f"Neon refused new connections to endpoint {EP} for 2 s (Too many connections attempts; "
      "{n} attempts): use the pooled (-pooler) connection string, open fewer connections at "
      "once, or try again later")),
    ("TOO_MANY_CONNECTIONS", P,
     (f"Neon refused new connections to endpoint {EP} for 2 s (Too many connections to this "
      "endpoint. Please try again later; {n} attempts): open fewer connections at once, or try "
      "again later")),
    ("NO_PERMIT", P,
     (f"Neon refused new connections to endpoint {EP} for 2 s (Failed to acquire permit to "
      "connect to the database. Too many database connection attempts are currently ongoing; "
      "{n} attempts): open fewer connections at once, or try again later")),
]


@pytest.mark.parametrize(("failure", "change", "expected"), FINAL,
                         ids=["wrong-password", "unknown-endpoint", "unknown-database",
                              "no-endpoint", "options-differ", "no-tls", "disabled", "not-found",
                              "quota"])
def test_final_failures_are_one_line_and_never_retried(
        neon: NeonProxy, pg: Postgres, dbname: str, tmp_path: Path, failure: str | None,
        change: dict[str, str], expected: str) -> None:
    endpoint = neon.endpoints[MAIN_ENDPOINT]
    endpoint.failure = getattr(neon_proxy, failure) if failure else None
    url = neon_url(neon, change.get("dbname", dbname),
                   **{k: v for k, v in change.items() if k not in ("dbname", "insecure")})
    insecure = {INSECURE_TLS: change["insecure"]} if "insecure" in change else {}
    result = run_script("members.py", env=script_env(pg, url, **insecure), cwd=tmp_path)
    assert error_line(result) == expected
    assert change.get("password", "s3cret") not in result.stdout + result.stderr
    assert " not ready (" not in result.stderr and endpoint.attempts <= 1  # not retried
    assert no_table(pg, dbname)


@pytest.mark.parametrize(("failure", "host", "expected"), RETRIED, ids=[f for f, _, _ in RETRIED])
def test_what_waiting_can_fix_is_retried_until_the_deadline(
        neon: NeonProxy, pg: Postgres, dbname: str, tmp_path: Path, failure: str, host: str,
        expected: str) -> None:
    endpoint = neon.endpoints[MAIN_ENDPOINT]
    endpoint.failure = getattr(neon_proxy, failure)
    url = neon_url(neon, dbname, host) + "&connect_timeout=2"
    result = run_script("members.py", env=script_env(pg, url), cwd=tmp_path)
    line = error_line(result)
    waits = [x for x in result.stderr.splitlines() if " not ready (" in x]
    assert line == expected.format(n=endpoint.attempts) and endpoint.attempts > 2
    [wait] = waits  # one line, however many attempts
    assert wait.startswith(f"Database at {host}:{neon.port} not ready "
                           f"({endpoint.failure}); retrying for up to "), wait
    assert no_table(pg, dbname)


def test_no_attempt_starts_that_the_deadline_would_cut_short(
        neon: NeonProxy, pg: Postgres, dbname: str, tmp_path: Path) -> None:
    """Each refusal takes 0.3 s to come (a busy control plane): the last attempt is one with
    time for its answer, so the line is Neon's, every attempt counted; not "timed out" after an
    attempt the deadline cut short, and no fall back from direct TLS, which worked."""
    endpoint = neon.endpoints[MAIN_ENDPOINT]
    endpoint.failure, endpoint.answer_delay = neon_proxy.NO_PERMIT, 0.3
    url = neon_url(neon, dbname, P) + "&connect_timeout=2"
    result = run_script("members.py", env=script_env(pg, url), cwd=tmp_path)
    [(_, _, expected)] = [case for case in RETRIED if case[0] == "NO_PERMIT"]
    assert error_line(result) == expected.format(n=endpoint.attempts), result.stderr
    assert endpoint.attempts >= 2 and "Direct TLS failed" not in result.stderr


# --- cold starts and suspends ----------------------------------------------------------------


def test_a_compute_that_fails_to_wake_twice_then_works(neon: NeonProxy, pg: Postgres, dbname: str,
                                                       tmp_path: Path) -> None:
    endpoint = neon.endpoints[MAIN_ENDPOINT]
    endpoint.failure, endpoint.failures = neon_proxy.NOT_WOKEN, 2
    started = time.monotonic()
    result = run_script("members.py", env=script_env(pg, neon_url(neon, dbname)), cwd=tmp_path)
    took = time.monotonic() - started
    assert_clean(result)
    waits = result.stderr.splitlines()
    assert waits == [(f"Database at {hostnames.POOLED}:{neon.port} not ready (Couldn't connect "
                      "to compute node); retrying for up to 30 s")], result.stderr
    assert endpoint.attempts == 3 and "1 members; newest: Member" in result.stdout
    print(f"\nfail twice, then work: members.py took {took:.2f} s ({' / '.join(waits)})")


def test_cold_start_is_a_slower_login_not_an_error(neon: NeonProxy, pg: Postgres, dbname: str,
                                                   tmp_path: Path) -> None:
    endpoint = neon.endpoints[MAIN_ENDPOINT]
    endpoint.suspended, endpoint.wake_delay = True, 1.0
    started = time.monotonic()
    result = run_script("members.py", env=script_env(pg, neon_url(neon, dbname)), cwd=tmp_path)
    assert_clean(result)
    assert result.stderr == "" and "1 members" in result.stdout  # no retry: it waited
    assert time.monotonic() - started >= 1.0 and not endpoint.suspended


@pytest.mark.parametrize("host", [hostnames.POOLED, hostnames.DIRECT])
def test_a_script_whose_connection_is_closed_mid_run(neon: NeonProxy, pg: Postgres, dbname: str,
                                                     tmp_path: Path, host: str) -> None:
    """The compute is suspended while a script runs: its first query is never answered."""
    neon.endpoints[MAIN_ENDPOINT].suspend_after = 0
    result = run_script("members.py", env=script_env(pg, neon_url(neon, dbname, host)), cwd=tmp_path)
    reason = ("connection was closed in the middle of operation" if host == hostnames.POOLED
              else "terminating connection due to administrator command")
    assert error_line(result) == (
        f"Lost the connection to the database ({reason}): the server restarted or dropped it "
        "(a Neon compute that was suspended or restarted does this); run the command again")
    assert no_table(pg, dbname)


@pytest.mark.parametrize("host", [hostnames.POOLED, hostnames.DIRECT])
def test_the_app_keeps_serving_after_a_suspend(neon: NeonProxy, pg: Postgres, dbname: str,
                                               tmp_path: Path, host: str) -> None:
    """Scale to zero with the app's connections open, then the next request wakes the compute."""
    create_tables(pg, pg.url(dbname))
    log = tmp_path / "uvicorn.log"
    with app_running(script_env(pg, neon_url(neon, dbname, host)), log) as client:
        assert client.post("/members", json={"name": "before"}).status_code == 201
        endpoint = neon.endpoints[MAIN_ENDPOINT]
        assert endpoint.sessions  # the pool's connection is open
        endpoint.wake_delay = 0.5
        neon.suspend(MAIN_ENDPOINT)  # returns once the connections are closed

        after = client.post("/members", json={"name": "after"})
        assert after.status_code == 201, after.text
        listed = client.get("/members")
        assert listed.status_code == 200
        assert [m["name"] for m in listed.json()] == ["after", "before"]
        assert not endpoint.suspended  # woken by the request
    assert "Traceback" not in log.read_text()
