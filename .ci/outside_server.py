"""The suite against a PostgreSQL it did not start, as TEST_DATABASE_URL users run it.

    python .ci/outside_server.py [pytest arguments]

CI's proof (``.ci/outside-server``) that the suites pass against someone else's server (a Neon
branch, a company server): it starts a throwaway cluster of its own, with TLS from a throwaway CA
and SCRAM, and runs your tests, the library's suite and the template's checks, each in its own folder as
CI runs it, with TEST_DATABASE_URL naming it by host name
(``localhost``) and the CA trusted the way a private CA is, through SSL_CERT_FILE. Then a few
tests again with the trust in the URL instead (``sslrootcert=``). The cluster is stopped at the
end. The tests that must stop or own the server (restarts, its log, PgBouncer in front) skip.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from tortoise_neon.testing import servers
from tortoise_neon.testing.sealed import child_env

ROOT = Path(__file__).resolve().parent.parent
# (folder, pytest arguments): your tests, the library's suite (but a 30 s wait on a silent socket
# of its own, never the database server: the normal run has it), the template's checks.
SUITES = [
    (ROOT, ["tests"]),
    (ROOT / "tortoise-neon", ["tests", "--deselect",
                              "tests/test_errors.py::test_host_that_never_answers_times_out"]),
    (ROOT, [".ci/checks"]),
]
# Then, with the trust in the URL: your tests, the CLI's migrations, a connect error.
SSLROOTCERT_TESTS = [
    (ROOT, ["tests"]),
    (ROOT / "tortoise-neon", ["tests/test_migrations.py", "tests/test_errors.py::test_wrong_password"]),
]


def pytest(suites: list[tuple[Path, list[str]]], args: list[str], env: dict[str, str]) -> int:
    status = 0
    for folder, suite in suites:
        print(f"== {folder.relative_to(ROOT)}: pytest {' '.join(suite)}", flush=True)
        status |= subprocess.run([sys.executable, "-m", "pytest", *suite, *args], env=env,
                                 cwd=folder, check=False).returncode
    return status


def start_server() -> servers.PostgresServer | None:
    """A throwaway cluster (TLS, SCRAM) from the newest PostgreSQL the tests find."""
    builds = [build for build in servers.find_builds() if build.tls]
    return servers.start_postgres(builds[-1]) if builds else None


def main(args: list[str]) -> int:
    server = start_server()
    if server is None:
        print("The outside-server run needs a PostgreSQL with TLS: apt-get install postgresql, "
              "or python -m tortoise_neon.testing.get_postgres", file=sys.stderr)
        return 1
    try:
        by_name = dataclasses.replace(server, host="localhost")  # the certificate names it too
        url = by_name.url("postgres")  # ?sslmode=require&channel_binding=require
        env = child_env()  # built for the run: nothing of the caller's database variables

        started = time.monotonic()
        shown = url.replace(quote(server.app_password, safe=""), "***")
        print(f"== TEST_DATABASE_URL={shown} with SSL_CERT_FILE={server.ca_path}", flush=True)
        trusted = {**env, "TEST_DATABASE_URL": url, "SSL_CERT_FILE": str(server.ca_path)}
        status = pytest(SUITES, args, trusted)

        print("== The same server, trusted through sslrootcert= in TEST_DATABASE_URL", flush=True)
        env.pop("SSL_CERT_FILE", None)
        status |= pytest(SSLROOTCERT_TESTS, ["-q", *args],
                         {**env, "TEST_DATABASE_URL": f"{url}&sslrootcert={server.ca_path}"})
        print(f"== Outside-server runs: {'passed' if status == 0 else 'FAILED'} in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        return status
    finally:
        servers.remove(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
