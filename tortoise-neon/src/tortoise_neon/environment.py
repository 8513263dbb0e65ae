"""DATABASE_URL (and DATABASE_URL_UNPOOLED) from the environment or ``.env``: the settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tortoise_neon.errors import DatabaseError
from tortoise_neon.url import parse_database_url, parse_replica_urls
from tortoise_neon.url_settings import REPLICA, DatabaseSettings

from dotenv import dotenv_values, load_dotenv

SQLITE_FILE = "quickstart.sqlite3"  # where the demo runs when DATABASE_URL is unset
UNPOOLED = "DATABASE_URL_UNPOOLED"  # Neon's name for the direct string: for migrations

# False in test processes (tortoise_neon.testing.seal()): the tests never read your .env.
READ_ENV_FILE = True


def find_env_file() -> str:
    """The project's ``.env``: beside the script that runs (``python main.py``) or in a folder
    above it, else in the current folder or above (``uvicorn app:app``, ``tortoise migrate``,
    which run from the project's root); "" when there is none."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    script = Path(main).resolve() if main and main.endswith(".py") else None
    # a tool's own __main__ in the venv (python -m tortoise) says nothing about the project
    installed = script is not None and script.is_relative_to(Path(sys.prefix).resolve())
    starts = [script.parent] if script is not None and not installed else []
    starts.append(Path.cwd())
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / ".env"
            if candidate.is_file():
                return str(candidate)
    return ""


def load_database_url(env_file: str | None = None, name: str = "DATABASE_URL") -> str | None:
    """DATABASE_URL (or ``name``) from the environment, or ``.env`` (which also fills one set but
    empty); None when unset. DATABASE_URL set but empty, with nothing in .env, is an error.

    ``.env``: ``find_env_file()``.
    """
    env_file = env_file or (find_env_file() if READ_ENV_FILE else "")
    preset = name in os.environ  # set by the environment itself, not by .env below
    if env_file:
        try:
            load_dotenv(env_file, encoding="utf-8-sig")  # -sig: the byte order mark some editors add
        except UnicodeDecodeError:
            raise DatabaseError(f"{env_file} is not UTF-8 text: save it again as UTF-8") from None
        except ValueError as exc:  # a NUL character, or a name with "=": no environment has those
            raise DatabaseError(f"{env_file} has a line that cannot be an environment variable "
                                f"({exc}): fix or remove that line") from None
    value = os.environ.get(name, "").strip()
    if not value and name in os.environ and not preset:  # `DATABASE_URL=` in .env: as if the
        del os.environ[name]  # line were not there (.env.example says to leave it empty)
        return None
    if not value and name in os.environ:  # set, but empty: `export DATABASE_URL=` somewhere
        if env_file:  # load_dotenv never overrides a set variable: .env fills it here
            value = (dotenv_values(env_file, encoding="utf-8-sig").get(name) or "").strip()
        if not value and name == "DATABASE_URL":  # never a silent SQLite
            raise DatabaseError("DATABASE_URL is set but empty: give it your connection string "
                                "(or put it in .env), or unset it (unset DATABASE_URL) for the "
                                "local SQLite demo")
    return value or None


def load_settings(*, for_migrations: bool = False) -> DatabaseSettings:
    """The settings for this run: DATABASE_URL, or the local SQLite default (announced).

    ``for_migrations`` (the Tortoise CLI): DATABASE_URL_UNPOOLED when it is set, Neon's direct
    string (`neonctl env pull` and Vercel's integration write both), else DATABASE_URL.
    """
    direct = load_database_url(name=UNPOOLED) if for_migrations else None
    if direct is not None:
        try:
            settings = parse_database_url(direct)
        except DatabaseError as exc:  # the line names the variable that holds the mistake
            raise DatabaseError(str(exc).replace("DATABASE_URL", UNPOOLED, 1)) from None
        settings.variable = UNPOOLED
        return settings
    url = load_database_url()
    replicas = None if for_migrations else load_database_url(name=REPLICA)
    if url is None:
        if replicas is not None:
            raise DatabaseError(f"{REPLICA} is set but DATABASE_URL is not: set DATABASE_URL "
                                "to the primary's connection string (writes go there)")
        print(
            f"DATABASE_URL is not set: using the local SQLite file {SQLITE_FILE}. "
            "To use Neon, put your connection string in .env (see .env.example)."
        )
        url = f"sqlite://{SQLITE_FILE}"
    settings = parse_database_url(url)
    if replicas is not None:
        if settings.engine != "postgres":
            raise DatabaseError(f"{REPLICA} needs DATABASE_URL to be a postgresql:// string "
                                f"(read replicas are PostgreSQL's): unset {REPLICA} for SQLite")
        settings.replicas = parse_replica_urls(replicas, REPLICA)
    return settings
