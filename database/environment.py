"""DATABASE_URL from the environment or ``.env``: the settings for this run."""

from __future__ import annotations

import os

from dotenv import find_dotenv, load_dotenv

from database.errors import DatabaseError
from database.settings import DatabaseSettings
from database.url import parse_database_url

SQLITE_FILE = "quickstart.sqlite3"  # where the demo runs when DATABASE_URL is unset


def load_database_url(env_file: str | None = None) -> str | None:
    """DATABASE_URL from the environment, or from ``.env``; None when unset or empty.

    ``.env`` is python-dotenv's: beside the scripts or in a folder above them.
    """
    env_file = env_file or find_dotenv()
    if env_file:
        try:
            load_dotenv(env_file, encoding="utf-8-sig")  # -sig: the byte order mark some editors add
        except UnicodeDecodeError:
            raise DatabaseError(f"{env_file} is not UTF-8 text: save it again as UTF-8") from None
        except ValueError as exc:  # a NUL character, or a name with "=": no environment has those
            raise DatabaseError(f"{env_file} has a line that cannot be an environment variable "
                                f"({exc}): fix or remove that line") from None
    return os.environ.get("DATABASE_URL", "").strip() or None


def load_settings() -> DatabaseSettings:
    """The settings for this run: DATABASE_URL, or the local SQLite default (announced)."""
    url = load_database_url()
    if url is None:
        print(
            f"DATABASE_URL is not set: using the local SQLite file {SQLITE_FILE}. "
            "To use Neon, put your connection string in .env (see .env.example)."
        )
        url = f"sqlite://{SQLITE_FILE}"
    return parse_database_url(url)
