"""The suite against a PostgreSQL it did not start, as TEST_DATABASE_URL users run it.

    python -m tortoise_neon.testing.outside_server [pytest arguments]

CI's proof (``.ci/outside-server``) that the suite passes against someone else's server (a Neon
branch, a company server): it starts a throwaway cluster of its own, with TLS from a throwaway CA
and SCRAM, and runs your tests and the library's suite with TEST_DATABASE_URL naming it by host name
(``localhost``) and the CA trusted the way a private CA is, through SSL_CERT_FILE. Then a few
tests again with the trust in the URL instead (``sslrootcert=``). The cluster is stopped at the
end. The tests that must stop or own the server (restarts, its log, PgBouncer in front) skip.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from urllib.parse import quote

from tortoise_neon.testing import servers
from tortoise_neon.testing.sealed import child_env

# Your tests and the library's suite; then, with the trust in the URL: your tests, the CLI's
# migrations, a connect error.
SUITES = ["tests", "tortoise-neon/tests"]
SSLROOTCERT_TESTS = [
    "tests",
    "tortoise-neon/tests/test_migrations.py",
    "tortoise-neon/tests/test_errors.py::test_wrong_password",
]


# 30 s against a silent socket of its own, never the database server: the normal run has it.
NOT_AGAIN = ["--deselect", "tortoise-neon/tests/test_errors.py::test_host_that_never_answers_times_out"]


def pytest(args: list[str], env: dict[str, str]) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", *args], env=env, check=False).returncode


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
        shown = url.replace(quote(servers.APP_PASSWORD, safe=""), "***")
        print(f"== TEST_DATABASE_URL={shown} with SSL_CERT_FILE={server.ca_path}", flush=True)
        trusted = {**env, "TEST_DATABASE_URL": url, "SSL_CERT_FILE": str(server.ca_path)}
        status = pytest([*SUITES, *NOT_AGAIN, *args], trusted)

        print("== The same server, trusted through sslrootcert= in TEST_DATABASE_URL", flush=True)
        env.pop("SSL_CERT_FILE", None)
        status |= pytest(["-q", *SSLROOTCERT_TESTS, *args],
                         {**env, "TEST_DATABASE_URL": f"{url}&sslrootcert={server.ca_path}"})
        print(f"== Outside-server runs: {'passed' if status == 0 else 'FAILED'} in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        return status
    finally:
        servers.remove(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
