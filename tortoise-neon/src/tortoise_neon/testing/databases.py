"""A database for each of your tests (tests/conftest.py): on one real PostgreSQL per session.

The server: TEST_DATABASE_URL (a Neon branch, or any PostgreSQL whose user may create
databases) if set, else a throwaway local cluster with TLS and SCRAM (servers.py), the newest
this machine has. Each test gets a database of its own, created empty and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from tortoise_neon.migrate import quote_ident
from tortoise_neon.testing import servers


@contextmanager
def session_server() -> Iterator[servers.Target]:
    """TEST_DATABASE_URL, or a local throwaway server started here and removed at the end."""
    remote = os.environ.get("TEST_DATABASE_URL")
    if remote:
        yield remote
        return
    builds = sorted((b for b in servers.find_builds() if b.tls), key=lambda b: b.major)
    if not builds:
        raise RuntimeError("No PostgreSQL with TLS for the tests: install the system package "
                           "postgresql, or run python -m tortoise_neon.testing.get_postgres, or set "
                           "TEST_DATABASE_URL")
    server = servers.start_postgres(builds[-1])
    try:
        yield server
    finally:
        servers.remove(server)


@contextmanager
def fresh_database(target: servers.Target) -> Iterator[str]:
    """A new, empty database on ``target``; its URL (Neon's console form); dropped after."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    if isinstance(target, servers.PostgresServer):
        assert target.ca_path is not None
        url = target.url(name, query=f"sslmode=verify-full&sslrootcert={target.ca_path}")
        owner = f" OWNER {quote_ident(servers.APP_USER)}"
    else:
        url, owner = urlunsplit(urlsplit(target)._replace(path=f"/{name}")), ""
    servers.admin_execute(target, f"CREATE DATABASE {quote_ident(name)}{owner}")
    try:
        yield url
    finally:
        servers.admin_execute(target, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
