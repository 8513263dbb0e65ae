"""tortoise-neon: Tortoise ORM on Neon serverless Postgres, from DATABASE_URL to one-line errors.

The public names are in ``__all__``; the library's README says what each does, and which module
holds it (one job each).
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

__version__ = "0.2.0"

from typing import Any

from tortoise_neon.asgi import OneLineStartupErrors, answer_database_errors
from tortoise_neon.cli import one_line_errors_for_other_tools
from tortoise_neon.config import project_models, tortoise_config
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.environment import load_settings
from tortoise_neon.errors import DatabaseError, explain_error
from tortoise_neon.migrate import SCHEMA_LOCK_ID, check_schema, create_schema, migrate
from tortoise_neon.routing import primary
from tortoise_neon.script import connect, run
from tortoise_neon.table_rename import rename_table
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
    "answer_database_errors",
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

#: Tortoise's config for its CLI (``tortoise_orm = "tortoise_neon.TORTOISE_ORM"``): built when read,
#: from DATABASE_URL_UNPOOLED when set (migrations), else DATABASE_URL; errors then end as one line.
TORTOISE_ORM: dict[str, Any]
MODELS: list[str]


def __getattr__(name: str) -> Any:
    if name == "MODELS":  # read when used: importing the package imports nothing of yours
        return project_models()
    if name == "TORTOISE_ORM":
        one_line_errors_for_other_tools()  # load_settings' own errors: one line too
        settings = load_settings(for_migrations=True)
        one_line_errors_for_other_tools(settings.variable)
        return tortoise_config(settings)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
