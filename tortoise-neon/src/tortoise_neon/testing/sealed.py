"""Sealed tests: no test reads your .env or your database variables, and every process a test
starts gets an environment built for it, not yours with one key replaced.

Only ``TEST_DATABASE_URL`` points the tests at an outside server (a Neon branch, say).
"""

from __future__ import annotations

import os

import tortoise_neon.environment
from tortoise_neon.database_settings import INSECURE_TLS

# What a child process may inherit: where programs and the home folder are, the locale, the
# temporary folder, CI (a nested suite skips nothing there either), and the CA trust that
# TEST_DATABASE_URL's server may need. Nothing that names a database.
PASSED_ON = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ",
             "CI", "SYSTEMROOT", "SSL_CERT_FILE", "SSL_CERT_DIR", "XDG_CACHE_HOME",
             "TORTOISE_NEON_CACHE")


def names_a_database(key: str) -> bool:
    """DATABASE_URL and its kin (_UNPOOLED, _REPLICA, ...), DATABASE_ALLOW_INSECURE_TLS,
    libpq's PG* variables (asyncpg reads them), but not TEST_DATABASE_URL."""
    return key != "TEST_DATABASE_URL" and ("DATABASE_URL" in key or key.startswith("PG")
                                           or key == INSECURE_TLS)


def seal() -> None:
    """This test process reads no .env, and your database variables are gone from it."""
    tortoise_neon.environment.READ_ENV_FILE = False
    for key in [key for key in os.environ if names_a_database(key)]:
        del os.environ[key]


def child_env(**variables: str) -> dict[str, str]:
    """An environment for a process a test starts: the basics of this one (``PASSED_ON``),
    unbuffered Python output, and ``variables``."""
    env = {key: os.environ[key] for key in PASSED_ON if key in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env
