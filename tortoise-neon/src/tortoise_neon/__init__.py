"""Everything between DATABASE_URL and a working Tortoise ORM: the hard parts of the quickstart.

The public surface, what main.py, transactions.py, the Tortoise CLI and the FastAPI app use:

- ``connect()``           initialise Tortoise from DATABASE_URL, apply migrations, always close
- ``run(main())``         run a script: one ``Error:`` line instead of a traceback, clean Ctrl-C
- ``MODELS``              the modules that define models: ``MODELS`` in your ``settings.py``
- ``TORTOISE_ORM``        Tortoise's config dict for its CLI (DATABASE_URL_UNPOOLED if set)
- ``tortoise_config()``   the config dict from DATABASE_URL (an app's), or given settings
- ``migrate(apps)``       apply migrations/ as ``tortoise migrate`` does, safely when several
                          processes start at once (``create_schema()`` without migrations)
- ``check_schema()``      check that migrations created every model's table and columns
- ``OneLineStartupErrors`` a web app's start-up failure as one line (``asgi.py``)
- ``answer_503_when_down(app)`` a FastAPI app answers 503, not 500, when the database is down
- ``rename_table()``      a migration's operations after a ``Meta.table`` change
- ``primary()``           reads in the block go to the primary, not DATABASE_URL_REPLICA
- ``DatabaseError``, ``explain_error()``   the one-line errors

Each concern has its own module:

- ``environment.py`` DATABASE_URL(_UNPOOLED) from the environment or ``.env`` (else SQLite)
- ``url.py``         DATABASE_URL -> DatabaseSettings (every form Neon users paste)
- ``database_settings.py`` DatabaseSettings: what the URL says, safe to print
- ``tls.py``         the verifying TLS context, with ALPN
- ``config.py``      Tortoise's config dict (settings.MODELS, pool hooks)
- ``client.py``      Tortoise's asyncpg client: reads retried, the statement-cache switch
- ``connecting.py``  connect retries: what waiting can fix, within a deadline
- ``errors.py``      one line per failure, with the fix
- ``schema.py``      migrate(), create_schema() and check_schema()
- ``script.py``      connect() and run() for the scripts
- ``asgi.py``        one-line start-up errors, 503s, 409s and 422s for the FastAPI app
- ``constraints.py`` a write a constraint refused: which constraint, which field, whose fault
- ``schema_changes.py`` migration operations makemigrations cannot write (a table rename)
- ``replicas.py``    DATABASE_URL_REPLICA: reads to replicas, never behind your own write
- ``pool.py``        asyncpg's pool on a compute out of connection slots (many workers)
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

# Before anything imports them: a Python too old, or without the requirements, is one line.
_MISSING = [name for module, name in (("tortoise", "tortoise-orm"), ("asyncpg", "asyncpg"),
                                      ("dotenv", "python-dotenv")) if find_spec(module) is None]
if sys.version_info < (3, 10) or _MISSING:
    _found = (f"this is Python {sys.version.split()[0]}" if sys.version_info < (3, 10)
              else f"{', '.join(_MISSING)} not installed for {sys.executable}")
    raise SystemExit(f"Error: this project needs Python 3.10+ with its requirements ({_found}): "
                     "python3 -m venv .venv && . .venv/bin/activate && "
                     "pip install -r requirements.txt (Windows: .venv\\Scripts\\Activate.ps1)")

__version__ = "0.1.0"

from typing import Any

from tortoise_neon.asgi import OneLineStartupErrors, answer_503_when_down
from tortoise_neon.config import project_models, tortoise_config
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.environment import load_settings
from tortoise_neon.errors import DatabaseError, explain_error
from tortoise_neon.replicas import primary
from tortoise_neon.schema import SCHEMA_LOCK_ID, check_schema, create_schema, migrate
from tortoise_neon.schema_changes import rename_table
from tortoise_neon.script import connect, one_line_errors_for_other_tools, run
from tortoise_neon.tls import ssl_option
from tortoise_neon.url import parse_database_url

__all__ = [
    "MODELS",
    "SCHEMA_LOCK_ID",
    "TORTOISE_ORM",
    "DatabaseError",
    "DatabaseSettings",
    "OneLineStartupErrors",
    "__version__",
    "answer_503_when_down",
    "check_schema",
    "connect",
    "create_schema",
    "explain_error",
    "load_settings",
    "migrate",
    "parse_database_url",
    "primary",
    "rename_table",
    "run",
    "ssl_option",
    "tortoise_config",
]

#: Tortoise's config dict for its CLI (pyproject.toml: ``tortoise_neon.TORTOISE_ORM``): migrations,
#: so DATABASE_URL_UNPOOLED (Neon's direct string) when set, else DATABASE_URL; an app uses
#: ``tortoise_config()`` (DATABASE_URL). Built each time it is read (by ``__getattr__`` below),
#: not at import, so that importing this package never fails and always sees the current
#: environment. Reading it also makes a database error that ends the process one line.
TORTOISE_ORM: dict[str, Any]
MODELS: list[str]


def __getattr__(name: str) -> Any:
    if name == "MODELS":  # read when used: importing the package imports nothing of yours
        return project_models()
    if name == "TORTOISE_ORM":
        one_line_errors_for_other_tools()
        return tortoise_config(load_settings(for_migrations=True))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
