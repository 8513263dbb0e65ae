"""DATABASE_URL (and DATABASE_URL_UNPOOLED, DATABASE_URL_REPLICA) from the environment or
``.env``: the settings.

One rule for the three variables, wherever they are read (the scripts, the app, the Tortoise CLI):
a variable that is empty (or only spaces), in the environment or in ``.env``, counts as not set,
and the environment wins over ``.env`` when it has a value. Where that differs from a guess, a
line says so: an empty variable in the environment that ``.env`` fills (a warning), DATABASE_URL
empty beside a non-empty _UNPOOLED or _REPLICA (refused: the scripts would use the SQLite file
while migrations or reads went to PostgreSQL).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tortoise_neon.errors import DatabaseError
from tortoise_neon.url import parse_database_url, parse_replica_urls
from tortoise_neon.url_settings import REPLICA, DatabaseSettings

from dotenv import dotenv_values, load_dotenv

log = logging.getLogger(__name__)

SQLITE_FILE = "quickstart.sqlite3"  # where the demo runs when DATABASE_URL is unset
UNPOOLED = "DATABASE_URL_UNPOOLED"  # Neon's name for the direct string: for migrations

# False in test processes (tortoise_neon.testing.seal()): the tests never read your .env.
READ_ENV_FILE = True

# The variable whose server this process uses for its writes and its schema (DATABASE_URL, or
# DATABASE_URL_UNPOOLED in the Tortoise CLI): what the error lines name.
IN_USE = "DATABASE_URL"


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


def _read_env_file(env_file: str) -> dict[str, str | None]:
    """``.env``'s values; its other variables also go into the environment (load_dotenv: never
    over one the environment has)."""
    try:
        load_dotenv(env_file, encoding="utf-8-sig")  # -sig: the byte order mark some editors add
        return dotenv_values(env_file, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatabaseError(f"{env_file} is not UTF-8 text: save it again as UTF-8") from None
    except ValueError as exc:  # a NUL character, or a name with "=": no environment has those
        raise DatabaseError(f"{env_file} has a line that cannot be an environment variable "
                            f"({exc}): fix or remove that line") from None


def load_database_url(env_file: str | None = None, name: str = "DATABASE_URL") -> str | None:
    """DATABASE_URL (or ``name``): the environment's value if it has one, else ``.env``'s; None
    when neither has one. Empty (or spaces) counts as not set, in either place; an empty one in
    the environment that ``.env`` fills is said in a warning (the environment wins only with a
    value). The process's environment is left as the rule reads it: the value, or no variable.

    ``.env``: ``find_env_file()``.
    """
    env_file = env_file or (find_env_file() if READ_ENV_FILE else "")
    exported = os.environ.get(name)  # before .env: load_dotenv fills only what is missing
    in_file = _read_env_file(env_file) if env_file else {}
    value = (exported or "").strip() or (in_file.get(name) or "").strip() or None
    if value is None:
        os.environ.pop(name, None)  # `DATABASE_URL=` is as if the line were not there
        return None
    if exported is not None and not exported.strip():  # once: the environment gets the value
        log.warning("%s is empty in the environment: using the one in %s (an empty variable "
                    "counts as not set; to leave it unset, empty or delete its line in .env)",
                    name, env_file)
    os.environ[name] = value
    return value


def load_settings(*, for_migrations: bool = False) -> DatabaseSettings:
    """The settings for this run: DATABASE_URL, or the local SQLite default (announced).

    ``for_migrations`` (the Tortoise CLI): DATABASE_URL_UNPOOLED when it is set, Neon's direct
    string (`neonctl env pull` and Vercel's integration write both), else DATABASE_URL.
    Every path reads all three variables the same way, and refuses the same mixes: an _UNPOOLED
    or a _REPLICA without DATABASE_URL (or beside a SQLite one), which would send migrations or
    reads to PostgreSQL while the scripts and the app used the SQLite file.
    """
    global IN_USE
    exported_empty = not os.environ.get("DATABASE_URL", "x").strip()
    url = load_database_url()
    direct = load_database_url(name=UNPOOLED)
    replicas = load_database_url(name=REPLICA)
    kin = [name for name, value in ((UNPOOLED, direct), (REPLICA, replicas)) if value]
    if url is None and kin:
        names = " and ".join(kin)
        raise DatabaseError(
            f"{names} {'are' if len(kin) > 1 else 'is'} set but DATABASE_URL is not (an empty "
            "value counts as not set): set DATABASE_URL to the primary's connection string "
            f"(writes go there), or empty {names} too for the local SQLite demo")
    if url is not None and kin and url.strip().lower().startswith("sqlite:"):
        names = " and ".join(kin)
        raise DatabaseError(
            f"DATABASE_URL is a SQLite file but {names} {'are' if len(kin) > 1 else 'is'} set: "
            "migrations or reads would go to PostgreSQL, the scripts and the app to the SQLite "
            f"file; empty {names} for SQLite, or set DATABASE_URL to the primary's string")
    if for_migrations and direct is not None:
        try:
            settings = parse_database_url(direct)
        except DatabaseError as exc:  # the line names the variable that holds the mistake
            raise DatabaseError(str(exc).replace("DATABASE_URL", UNPOOLED, 1)) from None
        settings.variable = IN_USE = UNPOOLED
        return settings
    IN_USE = "DATABASE_URL"
    if url is None:
        print(
            f"DATABASE_URL is {'empty' if exported_empty else 'not set'}: using the local "
            f"SQLite file {SQLITE_FILE}. To use Neon, put your connection string in .env "
            "(see .env.example)."
        )
        url = f"sqlite://{SQLITE_FILE}"
    settings = parse_database_url(url)
    if replicas is not None and not for_migrations:
        settings.replicas = parse_replica_urls(replicas, REPLICA)
    return settings
