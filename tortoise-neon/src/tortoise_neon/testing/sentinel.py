"""CI's proof that the tests never touch your database: a sentinel named everywhere a user names
theirs, and a check that nothing reached it.

    python -m tortoise_neon.testing.sentinel COMMAND [ARG ...]

It starts a throwaway PostgreSQL of its own (TLS, SCRAM, every connection logged) with a database
``sentinel``, writes ``.env`` in the current folder naming it (DATABASE_URL,
DATABASE_URL_UNPOOLED, DATABASE_URL_REPLICA), exports the same and libpq's PG* variables to
COMMAND (say, ``python -m pytest``), and runs it. Afterwards the server must have logged no
connection at all while COMMAND ran, and the sentinel must have no table. The strings are valid
(the right password, the CA in the URL): a test that read one would really connect and write.
Exit status: COMMAND's, or 1 if the sentinel was touched. An existing .env is refused (move it
aside first): this never overwrites a file of yours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tortoise_neon.migrate import quote_ident
from tortoise_neon.testing import servers

NAME = "sentinel"
VARIABLES = ("DATABASE_URL", "DATABASE_URL_UNPOOLED", "DATABASE_URL_REPLICA")


def sentinel_env(server: servers.PostgresServer) -> dict[str, str]:
    url = server.url(NAME, query=f"sslmode=verify-full&sslrootcert={server.ca_path}")
    env = {name: url for name in VARIABLES}
    env.update(PGHOST=server.host, PGPORT=str(server.port), PGUSER=servers.APP_USER,
               PGPASSWORD=server.app_password, PGDATABASE=NAME, PGSSLROOTCERT=str(server.ca_path),
               PGSSLMODE="verify-full")
    return env


def touched(server: servers.PostgresServer, log_offset: int) -> list[str]:
    """What reached the sentinel: connections the server logged after ``log_offset``, and the
    sentinel's tables."""
    with server.logfile.open("rb") as log:
        log.seek(log_offset)
        seen = [line.decode(errors="replace").rstrip() for line in log
                if b"connection received" in line or b"connection authorized" in line]
    tables = servers.admin_query(
        server, "SELECT tablename FROM pg_tables WHERE schemaname NOT IN "
        "('pg_catalog', 'information_schema')", database=NAME)
    return seen + [f"table {row['tablename']} in the sentinel" for row in tables]


def main(command: list[str]) -> int:
    if not command:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    env_file = Path(".env")
    if env_file.exists():
        print("Error: .env exists here: move it aside for the sentinel run (it is never "
              "overwritten)", file=sys.stderr)
        return 2
    builds = [build for build in servers.find_builds() if build.tls]
    if not builds:
        print("Error: the sentinel needs a PostgreSQL with TLS: apt-get install postgresql, or "
              "python -m tortoise_neon.testing.get_postgres", file=sys.stderr)
        return 1
    server = servers.start_postgres(builds[-1])
    try:
        servers.admin_execute(server, f"CREATE DATABASE {quote_ident(NAME)} "
                                      f"OWNER {quote_ident(servers.APP_USER)}")
        variables = sentinel_env(server)
        env_file.write_text("".join(f'{name}="{variables[name]}"\n' for name in VARIABLES))
        offset = server.logfile.stat().st_size
        try:
            status = subprocess.run(command, env={**os.environ, **variables},
                                    check=False).returncode
        finally:
            env_file.unlink()
        found = touched(server, offset)
        print(f"== sentinel ({server.host}:{server.port}/{NAME}, named in .env, "
              f"{', '.join(VARIABLES)} and PG*): "
              + ("untouched" if not found else "TOUCHED:\n" + "\n".join(found)), flush=True)
        return status or (1 if found else 0)
    finally:
        servers.remove(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
