"""One line per failure: what went wrong and how to fix it, never the password."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

import asyncpg
from tortoise.exceptions import BaseORMException

if TYPE_CHECKING:
    from database.settings import DatabaseSettings


class DatabaseError(Exception):
    """A problem the user can fix; ``str()`` is the one line to print."""


# Errors that reach the top of a script as one line (anything else is a bug: traceback kept).
USER_FACING = (DatabaseError, BaseORMException, asyncpg.PostgresError, asyncpg.InterfaceError,
               OSError, asyncio.TimeoutError)

MIGRATE = "run `tortoise makemigrations` then `tortoise migrate`"


def failure_reason(exc: BaseException) -> str:
    """A few words for what went wrong: "connection refused", "timed out", ..."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc).splitlines()[0]
    if isinstance(exc, OSError) and ("Errno 111" in str(exc) or "Connect call failed" in str(exc)):
        return "connection refused"  # also asyncio's "Multiple exceptions" for several addresses
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def explain_connect_error(exc: BaseException, s: DatabaseSettings) -> str:
    """The one line for a connect error that waiting will not fix."""
    message = str(exc)
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return (
            f"Password authentication failed for user {s.user} at {s.host}: copy the connection "
            "string again from Neon's Connect dialog (or reset the role's password)"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"Database {s.database} does not exist at {s.host}: fix the name after the host in "
            "DATABASE_URL (Neon's default is neondb)"
        )
    if isinstance(exc, asyncpg.PostgresError) and s.sslmode in ("disable", "allow") and any(
        word in message.lower() for word in ("no encryption", "ssl", "insecure")
    ):
        return f"{s.host} requires TLS: remove sslmode={s.sslmode} from DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"The server refused user {s.user}: {message.splitlines()[0]}"
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN:
        return f"Could not look up the host {s.host} (DNS not answering): check your network"
    if isinstance(exc, socket.gaierror):
        return f"Cannot find the host {s.host}: check the host name in DATABASE_URL for a typo"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed for {s.host} ({exc.verify_message}): check "
            "the host name, or give the server's CA with sslrootcert=/path/to/ca.pem"
        )
    if s.direct_tls and isinstance(exc, (ssl.SSLError, ConnectionError)):
        return (
            f"Direct TLS failed at {s.host} ({failure_reason(exc)}): the server may not "
            "support it (PostgreSQL 17+); remove sslnegotiation=direct from DATABASE_URL"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed at {s.host} ({exc.reason or exc}): check sslmode in DATABASE_URL"
    if "rejected SSL upgrade" in message:
        return (
            f"{s.host} does not offer TLS: for a trusted server on your own network, add "
            "sslmode=disable to DATABASE_URL"
        )
    return f"Could not connect to {s.where}: {failure_reason(exc)}"


def explain_error(exc: BaseException) -> str:
    """One line for a database or network error that reached the top."""
    while isinstance(exc, BaseORMException) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__  # Tortoise wraps the driver's error: explain the original
    if isinstance(exc, DatabaseError):
        return str(exc)
    if isinstance(exc, (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError,
                        ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return (
            f"Lost the connection to the database ({failure_reason(exc)}): the server restarted "
            "or dropped it; run the command again"
        )
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "The database did not answer in time: run the command again"
    first = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, asyncpg.UndefinedTableError) or "no such table" in first:  # or SQLite's
        return (f"The database has no table for a model ({first}): {MIGRATE} (or, for the "
                "quickstart's own table, run `python main.py` once)")
    if isinstance(exc, asyncpg.UndefinedColumnError) or "no such column" in first or (
        "has no column named" in first
    ):
        return f"The database schema is behind the models ({first}): {MIGRATE}"
    return f"{type(exc).__name__}: {first}"
