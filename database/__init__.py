"""Everything between DATABASE_URL and a working Tortoise ORM: the hard parts of the quickstart.

The public surface, what main.py, transactions.py, the Tortoise CLI and the FastAPI app use:

- ``connect()``           initialise Tortoise from DATABASE_URL, create the schema, always close
- ``run(main())``         run a script: one ``Error:`` line instead of a traceback, clean Ctrl-C
- ``MODELS``              the modules that define models (``config.py``): add yours there
- ``TORTOISE_ORM``        Tortoise's config dict for its CLI (pyproject.toml) and web apps
- ``tortoise_config()``   the same dict, for given settings or models
- ``create_schema()``     create missing tables, safely when several processes start at once
- ``check_schema()``      check that migrations created every model's table and columns
- ``OneLineStartupErrors`` a web app's start-up failure as one line (``asgi.py``)
- ``answer_503_when_down(app)`` a FastAPI app answers 503, not 500, when the database is down
- ``DatabaseError``, ``explain_error()``   the one-line errors

Each concern has its own module:

- ``environment.py`` DATABASE_URL from the environment or ``.env`` (SQLite when unset)
- ``url.py``         DATABASE_URL -> DatabaseSettings (every form Neon users paste)
- ``settings.py``    DatabaseSettings: what the URL says, safe to print
- ``tls.py``         the verifying TLS context, with ALPN
- ``config.py``      MODELS and Tortoise's config dict (pool hooks included)
- ``client.py``      Tortoise's asyncpg client: reads retried, the statement-cache switch
- ``connecting.py``  connect retries: what waiting can fix, within a deadline
- ``errors.py``      one line per failure, with the fix
- ``schema.py``      create_schema() and check_schema()
- ``script.py``      connect() and run() for the scripts
- ``asgi.py``        one-line start-up errors and 503s for the FastAPI app
"""

from __future__ import annotations

from typing import Any

from database.asgi import OneLineStartupErrors, answer_503_when_down
from database.config import MODELS, tortoise_config
from database.environment import load_settings
from database.errors import DatabaseError, explain_error
from database.schema import SCHEMA_LOCK_ID, check_schema, create_schema
from database.script import connect, one_line_errors_for_other_tools, run
from database.settings import DatabaseSettings
from database.tls import ssl_option
from database.url import parse_database_url

__all__ = [
    "MODELS", "SCHEMA_LOCK_ID", "TORTOISE_ORM", "DatabaseError", "DatabaseSettings",
    "OneLineStartupErrors", "answer_503_when_down", "check_schema", "connect", "create_schema", "explain_error",
    "load_settings", "parse_database_url", "run", "ssl_option", "tortoise_config",
]

#: Tortoise's config dict, for its CLI (pyproject.toml: ``database.TORTOISE_ORM``) and web apps.
#: Built from DATABASE_URL each time it is read (by ``__getattr__`` below), not at import, so
#: that importing this package never fails and always sees the current DATABASE_URL. Reading it
#: also makes a database error that ends the process (``tortoise migrate``) one line.
TORTOISE_ORM: dict[str, Any]


def __getattr__(name: str) -> Any:
    if name == "TORTOISE_ORM":
        one_line_errors_for_other_tools()
        return tortoise_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
