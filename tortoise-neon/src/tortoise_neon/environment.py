"""The settings from DATABASE_URL, DATABASE_URL_UNPOOLED and DATABASE_URL_REPLICA, read from the
environment or ``.env``, never written (the rule: docs/connecting.md)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from pathlib import Path

from tortoise_neon.database_settings import (
    INSECURE_TLS,
    PRIMARY,
    REPLICA,
    UNPOOLED,
    DatabaseSettings,
)
from tortoise_neon.errors import DatabaseError
from tortoise_neon.url import insecure_tls_allowed, parse_database_url, parse_replica_urls

from dotenv import dotenv_values

log = logging.getLogger(__name__)

SQLITE_FILE = "quickstart.sqlite3"  # where the demo runs when DATABASE_URL is unset
READ_ENV_FILE = True  # False in test processes (tortoise_neon.testing.seal())


def find_env_file() -> str:
    """The project's ``.env``: beside the running script or in a folder above it, else in the
    current folder or above; "" when there is none."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    script = Path(main).resolve() if main and main.endswith(".py") else None
    starts = [Path.cwd()]
    # a tool's own __main__ in the venv (python -m tortoise) says nothing about the project
    if script is not None and not script.is_relative_to(Path(sys.prefix).resolve()):
        starts.insert(0, script.parent)
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / ".env").is_file():
                return str(folder / ".env")
    return ""


def read_env_file(env_file: str) -> dict[str, str | None]:
    """``.env``'s values, as a dict (the environment is left alone)."""
    if not env_file:
        return {}
    try:
        return dotenv_values(env_file, encoding="utf-8-sig")  # -sig: a byte order mark
    except UnicodeDecodeError:
        raise DatabaseError(f"{env_file} is not UTF-8 text: save it again as UTF-8") from None
    except ValueError as exc:  # a NUL character, or a name with "=": no environment has those
        raise DatabaseError(f"{env_file} has a line that cannot be an environment variable "
                            f"({exc}): fix or remove that line") from None


def load_database_url(env_file: str | None = None, name: str = PRIMARY) -> str | None:
    """``name``'s value by the rule, from the environment or ``env_file`` (by default
    ``find_env_file()``); None when neither has one."""
    env_file = env_file or (find_env_file() if READ_ENV_FILE else "")
    return _value(name, read_env_file(env_file), env_file)


def _value(name: str, in_file: dict[str, str | None], env_file: str) -> str | None:
    exported = os.environ.get(name)
    value = (exported or "").strip() or (in_file.get(name) or "").strip() or None
    if value is not None and exported is not None and not exported.strip():
        _say_filled(name, env_file)
    return value


@functools.cache
def _say_filled(name: str, env_file: str) -> None:
    """Once per process: an empty variable in the environment that ``.env`` fills."""
    log.warning("%s is empty in the environment: using the one in %s (an empty variable "
                "counts as not set; to leave it unset, empty or delete its line in .env)",
                name, env_file)


def load_settings(*, for_migrations: bool = False) -> DatabaseSettings:
    """The settings for this run: DATABASE_URL, or the local SQLite default (announced).
    ``for_migrations`` (the Tortoise CLI): DATABASE_URL_UNPOOLED when it is set."""
    env_file = find_env_file() if READ_ENV_FILE else ""
    in_file = read_env_file(env_file)
    url, direct, replicas, insecure = (_value(name, in_file, env_file)
                                       for name in (PRIMARY, UNPOOLED, REPLICA, INSECURE_TLS))
    kin = [name for name, value in ((UNPOOLED, direct), (REPLICA, replicas)) if value]
    names, are = " and ".join(kin), "are" if len(kin) > 1 else "is"
    if url is None and kin:
        raise DatabaseError(
            f"{names} {are} set but DATABASE_URL is not (an empty value counts as not set): set "
            "DATABASE_URL to the primary's connection string (writes go there), or empty "
            f"{names} too for the local SQLite demo")
    if url is not None and kin and url.lower().startswith("sqlite:"):
        raise DatabaseError(
            f"DATABASE_URL is a SQLite file but {names} {are} set: migrations or reads would go "
            "to PostgreSQL, the scripts and the app to the SQLite file; empty "
            f"{names} for SQLite, or set DATABASE_URL to the primary's string")
    allow = insecure_tls_allowed(insecure)
    if for_migrations and direct is not None:
        return parse_database_url(direct, UNPOOLED, allow_insecure_tls=allow)
    if url is None:
        empty = PRIMARY in os.environ  # and only spaces
        print(f"DATABASE_URL is {'empty' if empty else 'not set'}: using the local SQLite file "
              f"{SQLITE_FILE}. To use Neon, put your connection string in .env (see .env.example).")
        url = f"sqlite://{SQLITE_FILE}"
    settings = parse_database_url(url, allow_insecure_tls=allow)
    if replicas is None or for_migrations:
        return settings
    replica_settings = parse_replica_urls(replicas, allow_insecure_tls=allow)
    return dataclasses.replace(settings, replicas=replica_settings)
