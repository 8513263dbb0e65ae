"""One line per failure: what went wrong and how to fix it, never the password."""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tortoise_neon.constraints import violation
from tortoise_neon.database_settings import is_local_host

import asyncpg
from tortoise.exceptions import BaseORMException, ValidationError

if TYPE_CHECKING:
    from tortoise_neon.database_settings import DatabaseSettings


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


@dataclass(frozen=True)
class NeonFailure:
    """One of the failures Neon's proxy reports itself: SQLSTATE XX000, the message text only."""

    words: str  # a regular expression for the start of the proxy's message
    wait: bool  # waiting can fix it: retried within the connect deadline
    line: str  # fills in host label endpoint user database message deadline attempts use_pooler


CONSOLE = "Neon console"
NEON_FAILURES = (
    NeonFailure(r"password authentication failed for user", False,
                "Password authentication failed for user {user} at {host}: copy the connection "
                "string again from Neon's Connect dialog; on Neon this also means an unknown role "
                "or a typo in the endpoint id ({endpoint})"),
    NeonFailure(r'database ".*" does not exist', False,
                "Database {database} does not exist at {host}: fix the name after the host in "
                "{variable} (Neon's default is neondb)"),
    NeonFailure(r"Endpoint ID is not specified", False,
                "Neon cannot tell which endpoint {host} means (Endpoint ID is not specified): use "
                "the host name from Neon's Connect dialog (ep-....neon.tech), or add "
                "options=endpoint%3D<endpoint-id> to {variable} (the host's first part)"),
    NeonFailure(r"Inconsistent project name", False,
                "{message}: the endpoint in options=endpoint%3D... must be the host's first part "
                "({label}); remove the option, the host name is enough"),
    NeonFailure(r"Control plane request failed: endpoint is disabled", False,
                "Neon endpoint {endpoint} is disabled ({message}): it accepts no connections "
                "until it is enabled again; check its compute and your plan's limits in the "
                + CONSOLE),
    NeonFailure(r"Control plane request failed: endpoint cannot be found", False,
                "Neon has no endpoint {endpoint} ({message}): its branch or project may have "
                "been deleted; copy the connection string again from the Connect dialog"),
    NeonFailure(r"Your project has exceeded|.* quota", False,
                "Neon refused endpoint {endpoint}: {message} (see Billing and usage in the "
                + CONSOLE + ")"),
    NeonFailure(r"Couldn't connect to compute node", True,
                "Neon could not wake the compute of endpoint {endpoint} within {deadline:g} s "
                "({message}; {attempts} attempts): check the compute's state in the " + CONSOLE
                + " and Neon's status page, then run the command again"),
    NeonFailure(r"Too many connections|Failed to acquire permit", True,  # Neon's rate limits
                "Neon refused new connections to endpoint {endpoint} for {deadline:g} s "
                "({message}; {attempts} attempts): {use_pooler}open fewer connections at once, "
                "or try again later"),
)


def neon_failure(exc: BaseException) -> NeonFailure | None:
    """The Neon proxy failure this is, if any: matched on the text, since the SQLSTATE is XX000."""
    if isinstance(exc, asyncpg.InternalServerError):  # XX000
        for failure in NEON_FAILURES:
            if re.match(failure.words, str(exc)):
                return failure
    return None


def explain_neon(failure: NeonFailure, exc: BaseException, s: DatabaseSettings,
                 attempts: int = 1) -> str:
    """The line for a Neon proxy failure, with the proxy's own words where they help."""
    label = s.host.split(".")[0]
    named = re.search(r"(?:endpoint|project)=([\w-]+)", s.server_settings.get("options", ""))
    return failure.line.format(
        host=s.host, label=label, user=s.user,
        endpoint=named.group(1) if named else label.removesuffix("-pooler"),
        database=s.database, message=str(exc).splitlines()[0].rstrip("."), variable=s.variable,
        deadline=s.connect_deadline, attempts=attempts,
        use_pooler="" if s.pooled else "use the pooled (-pooler) connection string, ")


def explain_gave_up(exc: BaseException, s: DatabaseSettings, attempts: int,
                    within: float) -> str:
    """The line when the server was still not ready after ``within`` seconds of waiting."""
    failure = neon_failure(exc)
    if failure is not None:
        return explain_neon(failure, exc, s, attempts)
    return (f"Could not connect to {s.where} within {within:g} s "
            f"({failure_reason(exc)}, {attempts} attempts): check that the host and port in "
            f"{s.variable} are right and that the database is running")


WORKERS_DOC = "docs/replicas-and-workers.md"
# A compute out of connection slots: SQLSTATE 53300, or through Neon's proxy, which re-sends the
# compute's errors as XX000 with the message text only.
SLOTS_FULL = re.compile(r"remaining connection slots are reserved|(sorry, )?too many clients "
                        r"already")


def is_slots_full(exc: BaseException) -> bool:
    """The compute has no free connection slot (53300), directly or through Neon's proxy."""
    return isinstance(exc, asyncpg.TooManyConnectionsError) or (
        isinstance(exc, asyncpg.InternalServerError) and bool(SLOTS_FULL.match(str(exc))))


def explain_slots_full(exc: BaseException, s: DatabaseSettings, *, held: int = 0,
                       waited: float = 0) -> str:
    """The line for a compute out of connection slots (53300): the cause and the fix, which is
    never the host or the port. ``held``: the connections this process goes on with."""
    from tortoise_neon.url import is_neon  # url.py imports this module

    reason = f"{s.variable} at {s.host}: {str(exc).splitlines()[0]}"
    if not is_neon(s.host):  # no -pooler host here: the fixes any PostgreSQL has
        fix = (f"put a pooler such as PgBouncer in front of the server, lower pool_size in "
               f"{s.variable}, or raise the server's max_connections, so that processes x "
               f"pool_size fits max_connections (see {WORKERS_DOC})")
    else:
        fix = ("lower pool_size in " + s.variable if s.pooled else
               "use the pooled connection string (the -pooler host), or lower pool_size in "
               + s.variable) + " so that processes x pool_size fits the compute's "
        fix += f"max_connections (see {WORKERS_DOC})"
    if held:
        return (f"The database has no free connection slot ({reason}): this process goes on "
                f"with the {held} connection{'s' if held > 1 else ''} it holds; {fix}")
    return (f"The database had no free connection slot for {waited:g} s ({reason}): close "
            f"connections other programs hold, or {fix}")


def _refused(exc: BaseException) -> bool:
    """Connection refused: nothing listens there (for a host with several addresses, asyncio
    says "Multiple exceptions: [Errno 111] ..., [Errno 111] ..."; all must be refusals)."""
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


def is_direct_tls_failure(exc: BaseException, s: DatabaseSettings) -> bool:
    """Direct TLS that the server broke off or refused before the connection was up: before
    PostgreSQL 17 the server hangs up on the TLS hello; 17+ closes a direct connection without
    ALPN right after the handshake. Waiting will not fix either. (A certificate that does not
    verify has its own line; a refused connection is a server not started yet.)
    """
    failures = (ssl.SSLError, ConnectionError, asyncpg.ConnectionDoesNotExistError)
    return s.direct_tls and isinstance(exc, failures) and not isinstance(
        exc, (ssl.SSLCertVerificationError, ConnectionRefusedError))


def explain_connect_error(exc: BaseException, s: DatabaseSettings) -> str:
    """The one line for a connect error that waiting will not fix."""
    message = str(exc)
    failure = neon_failure(exc)
    if failure is not None:
        return explain_neon(failure, exc, s)
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return (
            f"Password authentication failed for user {s.user} at {s.host}: copy the connection "
            "string again from Neon's Connect dialog (or reset the role's password)"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"Database {s.database} does not exist at {s.host}: fix the name after the host in "
            f"{s.variable} (Neon's default is neondb)"
        )
    if isinstance(exc, asyncpg.PostgresError) and s.sslmode in ("disable", "allow") and any(
        word in message.lower() for word in ("no encryption", "ssl", "insecure")
    ):
        return f"{s.host} requires TLS: remove sslmode={s.sslmode} from {s.variable}"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"The server refused user {s.user}: {message.splitlines()[0]}"
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN:
        return f"Could not look up the host {s.host} (DNS not answering): check your network"
    if isinstance(exc, socket.gaierror):
        return f"Cannot find the host {s.host}: check the host name in {s.variable} for a typo"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed for {s.host} ({exc.verify_message}): check "
            "the host name, or give the server's CA with sslrootcert=/path/to/ca.pem"
        )
    if is_direct_tls_failure(exc, s):
        return (
            f"Direct TLS failed at {s.host} ({failure_reason(exc)}): the server may not "
            "support it (PostgreSQL 17+ and Neon do); remove sslnegotiation=direct from "
            f"{s.variable}"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed at {s.host} ({exc.reason or exc}): check sslmode in {s.variable}"
    if "rejected SSL upgrade" in message and not is_local_host(s.host):
        # Never "add sslmode=disable": anyone on the way can send this answer (docs/connecting.md).
        # With sslmode=allow (DATABASE_ALLOW_INSECURE_TLS=1), asyncpg tried without TLS first.
        sent = ", so nothing was sent (not the password either)" if s.verified else ""
        return (
            f"TLS was refused on the way to {s.address}: the server, or a device between, "
            f"answered that it does not speak TLS{sent}; check the host and port in "
            f"{s.variable}, and that the server has TLS on"
        )
    if "rejected SSL upgrade" in message:
        return (
            f"{s.host} does not offer TLS: for a trusted server on your own network, add "
            f"sslmode=disable to {s.variable}"
        )
    return f"Could not connect to {s.where}: {failure_reason(exc)}"


def used_a_closed_connection(exc: BaseException) -> bool:
    """asyncpg refused to send on a connection the server had ended, before sending anything:
    it knew it was closed (the pool takes such a connection back at once: "released back to
    the pool"), or found it still busy with a statement that the server's goodbye (57P01)
    broke off ("cannot switch to state 12; another operation (2) is in progress")."""
    closed = ("connection is closed", "released back to the pool")
    return (isinstance(exc, asyncpg.InterfaceError) and any(c in str(exc) for c in closed)) or (
        isinstance(exc, asyncpg.InternalClientError) and "cannot switch to state" in str(exc))


READ_ONLY = "25006"  # read_only_sql_transaction: a hot standby, a Neon read replica


def read_only_error(exc: BaseException) -> BaseException | None:
    """The server's "read-only transaction" error (SQLSTATE 25006) in ``exc``'s cause chain:
    asyncpg's ReadOnlySQLTransactionError, which Tortoise may wrap (TransactionManagementError,
    OperationalError); or its text, where a proxy re-sent it as XX000."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) == READ_ONLY or (
                isinstance(current, asyncpg.InternalServerError)
                and "in a read-only transaction" in str(current)):
            return current
        current = current.__cause__ or current.__context__
    return None


def explain_read_only(exc: BaseException) -> str:
    """The line for a write (a migration, the schema check) on a server that only reads."""
    from tortoise_neon import environment  # here: environment imports this module

    variable = environment.IN_USE
    first = (str(exc).splitlines() or [""])[0]
    return (f"The server in {variable} is read-only, a read replica or hot standby ({first}): "
            f"{variable} needs the primary's connection string (on Neon, the branch's read-write "
            "compute, not a read replica's); replicas go in DATABASE_URL_REPLICA")


# A column's new type that the rows it holds refuse (class 22: a value too long, out of range, not
# a valid input), or that PostgreSQL cannot cast to by itself.
REFUSED_TYPE = (asyncpg.DataError, asyncpg.DatatypeMismatchError, asyncpg.CannotCoerceError)


def refused_type_change(exc: BaseException) -> str | None:
    """The line for a migration's ``ALTER COLUMN ... TYPE`` that the rows refused: the table and
    the column (from the schema editor's frame, where Tortoise built the statement), why, the
    fix. None for any other error."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    while exc is not None and id(exc) not in seen:  # the error and the ones it wraps
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    driver = next((e for e in chain if isinstance(e, REFUSED_TYPE)), None)
    if driver is None:
        return None
    for error in chain:
        tb = error.__traceback__
        while tb is not None:
            frame = tb.tb_frame
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
            tb = tb.tb_next
    return None


def explain_error(exc: BaseException) -> str:
    """One line for a database or network error that reached the top."""
    broken = violation(exc)
    if broken is not None:
        return broken.line()
    read_only = read_only_error(exc)
    if read_only is not None:
        return explain_read_only(read_only)
    refused = refused_type_change(exc)
    if refused is not None:
        return refused
    while (isinstance(exc, BaseORMException) and isinstance(exc.__cause__, Exception)
           and not isinstance(exc, ValidationError)):  # its text names the field; the cause not
        exc = exc.__cause__  # Tortoise wraps the driver's error: explain the original
    if isinstance(exc, DatabaseError):
        return str(exc)
    if isinstance(exc, (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError,
                        ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
                  ) or used_a_closed_connection(exc):
        if isinstance(exc.__cause__, asyncpg.AdminShutdownError):
            exc = exc.__cause__  # the server's FATAL says more than "closed in the middle"
        reason = ("the connection was closed" if used_a_closed_connection(exc)
                  else failure_reason(exc))
        return (
            f"Lost the connection to the database ({reason}): the server restarted "
            "or dropped it (a Neon compute that was suspended or restarted does this); run the "
            "command again"
        )
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "The database did not answer in time: run the command again"
    first = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, asyncpg.UndefinedTableError) or "no such table" in first:  # or SQLite's
        return (f"The database has no table for a model ({first}): {MIGRATE} (or, for the "
                "quickstart's own table, run `python main.py` once); if you changed the "
                "model's Meta.table, write the migration in docs/schema-changes.md instead")
    if isinstance(exc, asyncpg.UndefinedColumnError) or "no such column" in first or (
        "has no column named" in first
    ):
        return f"The database schema is behind the models ({first}): {MIGRATE}"
    added = re.match(r'column "([^"]+)" of relation "([^"]+)" contains null values', first)
    if isinstance(exc, asyncpg.NotNullViolationError) and added:  # a migration's AddField
        column, table = added.groups()
        return (f'Cannot add the required column "{column}" to "{table}": its rows have no value '
                f"for it ({first}). Give the field a default (default=...), or add it with "
                "null=True, fill it in, then make it required, or fill it in a data migration "
                "(docs/schema-changes.md)")
    if isinstance(exc, asyncpg.DuplicateTableError) or (
        "already exists" in first and first.startswith("table ")  # SQLite's
    ):
        return (f"A migration creates a table the database already has ({first}), made without "
                "migrations: if it matches the models, record the migration as applied with "
                "`tortoise migrate --fake`, then run again")
    return f"{type(exc).__name__}: {first}"
