"""One line for an error that reached the top: what went wrong and the fix, never the password."""

from __future__ import annotations

import asyncio
import errno
import re
import ssl
import traceback

from tortoise_neon.constraints import violation
from tortoise_neon.error_chain import causes, driver_error

import asyncpg
from tortoise.exceptions import BaseORMException


class DatabaseError(Exception):
    """A problem the user can fix; ``str()`` is the one line to print."""


# A connection that went away: a compute that was suspended or restarted, a pooler that went.
LOST = (
    asyncpg.ConnectionDoesNotExistError,  # "connection was closed in the middle of operation"
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08 (a pooler's "server conn crashed?")
    asyncpg.AdminShutdownError,  # 57P01: the compute shuts down
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    ConnectionError,  # reset, broken pipe, aborted
)

# Errors that reach the top of a script as one line (anything else is a bug: traceback kept).
USER_FACING = (DatabaseError, BaseORMException, asyncpg.PostgresError, asyncpg.InterfaceError,
               OSError, asyncio.TimeoutError)

MIGRATE = "run `tortoise makemigrations` then `tortoise migrate`"
READ_ONLY = "25006"  # read_only_sql_transaction: a hot standby, a Neon read replica
# A column's new type that the rows refuse (class 22), or that PostgreSQL cannot cast to.
REFUSED_TYPE = (asyncpg.DataError, asyncpg.DatatypeMismatchError, asyncpg.CannotCoerceError)


def _refused(exc: BaseException) -> bool:
    """Nothing listens there (for a host with several addresses: every one refused)."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    errnos = re.findall(r"\[Errno (\d+)\]", str(exc)) if isinstance(exc, OSError) else []
    return bool(errnos) and str(exc).startswith("Multiple exceptions") and all(
        int(number) == errno.ECONNREFUSED for number in errnos)


def failure_reason(exc: BaseException) -> str:
    """A few words for what went wrong: "connection refused", "timed out", ..."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc).splitlines()[0]
    if _refused(exc):
        return "connection refused"
    if isinstance(exc, ssl.SSLError) and exc.reason:  # WRONG_VERSION_NUMBER: wrong version number
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, ConnectionResetError):  # asyncio's, during a TLS handshake
        return "connection reset"
    return type(exc).__name__


def used_a_closed_connection(exc: BaseException) -> bool:
    """asyncpg refused to send on a connection the server had ended (or one still busy with a
    statement the server's goodbye broke off)."""
    closed = ("connection is closed", "released back to the pool")
    return (isinstance(exc, asyncpg.InterfaceError) and any(c in str(exc) for c in closed)) or (
        isinstance(exc, asyncpg.InternalClientError) and "cannot switch to state" in str(exc))


def is_read_only(exc: BaseException) -> bool:
    """The server's "read-only transaction" (25006), or its text re-sent by a proxy as XX000."""
    return getattr(exc, "sqlstate", None) == READ_ONLY or (
        isinstance(exc, asyncpg.InternalServerError) and "in a read-only transaction" in str(exc))


def refused_type_change(exc: BaseException) -> str | None:
    """The line for a migration's ``ALTER COLUMN ... TYPE`` that the rows refused, with the
    table and column from Tortoise's ``_alter_field`` frame; None for any other error."""
    chain = list(causes(exc))
    driver = next((e for e in chain if isinstance(e, REFUSED_TYPE)), None)
    for error in chain if driver is not None else []:
        for frame, _ in traceback.walk_tb(error.__traceback__):
            names = frame.f_locals
            if (frame.f_code.co_name == "_alter_field" and "qualified_table" in names
                    and names.get("old_sql_type") != names.get("new_sql_type")):
                table, column = names["model"]._meta.db_table, names["new_db_field"]
                old_type, new_type = names["old_sql_type"], names["new_sql_type"]
                why = str(driver).splitlines()[0]
                return (f'Cannot change the column "{column}" of "{table}" from {old_type} to '
                        f"{new_type}: rows it holds refuse the new type ({why}); the migration "
                        "was rolled back and the rows are as they were. Shorten or convert "
                        "those rows first, in a data migration: a RunSQL UPDATE before the "
                        "AlterField (docs/schema-changes.md), then run `tortoise migrate` again")
    return None


def explain_error(exc: BaseException, variable: str = "DATABASE_URL") -> str:
    """One line for a database or network error that reached the top; ``variable`` names the
    connection string in use."""
    broken = violation(exc)
    if broken is not None:
        return broken.line()
    read_only = next((e for e in causes(exc) if is_read_only(e)), None)
    if read_only is not None:  # a write (a migration, the schema check) on a replica
        first = (str(read_only).splitlines() or [""])[0]
        return (f"The server in {variable} is read-only, a read replica or hot standby ({first}): "
                f"{variable} needs the primary's connection string (on Neon, the branch's "
                "read-write compute, not a read replica's); replicas go in DATABASE_URL_REPLICA")
    refused = refused_type_change(exc)
    if refused is not None:
        return refused
    exc = driver_error(exc)
    if isinstance(exc, DatabaseError):
        return str(exc)
    if isinstance(exc, (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError,
                        ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
                  ) or used_a_closed_connection(exc):
        if isinstance(exc.__cause__, asyncpg.AdminShutdownError):
            exc = exc.__cause__  # the server's FATAL says more than "closed in the middle"
        reason = ("the connection was closed" if used_a_closed_connection(exc)
                  else failure_reason(exc))
        return (f"Lost the connection to the database ({reason}): the server restarted or "
                "dropped it (a Neon compute that was suspended or restarted does this); run "
                "the command again")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "The database did not answer in time: run the command again"
    first = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, asyncpg.UndefinedTableError) or "no such table" in first:  # or SQLite's
        return (f"The database has no table for a model ({first}): {MIGRATE} (or, for the "
                "quickstart's own table, run `python main.py` once); if you changed the "
                "model's Meta.table, write the migration in docs/schema-changes.md instead")
    if isinstance(exc, asyncpg.UndefinedColumnError) or "no such column" in first or (
            "has no column named" in first):
        return f"The database schema is behind the models ({first}): {MIGRATE}"
    added = re.match(r'column "([^"]+)" of relation "([^"]+)" contains null values', first)
    if isinstance(exc, asyncpg.NotNullViolationError) and added:  # a migration's AddField
        column, table = added.groups()
        return (f'Cannot add the required column "{column}" to "{table}": its rows have no value '
                f"for it ({first}). Give the field a default (default=...), or add it with "
                "null=True, fill it in, then make it required, or fill it in a data migration "
                "(docs/schema-changes.md)")
    if isinstance(exc, asyncpg.DuplicateTableError) or (
            "already exists" in first and first.startswith("table ")):  # SQLite's
        return (f"A migration creates a table the database already has ({first}), made without "
                "migrations: if it matches the models, record the migration as applied with "
                "`tortoise migrate --fake`, then run again")
    return f"{type(exc).__name__}: {first}"
