"""Everything between DATABASE_URL and a working Tortoise ORM: the hard parts of the quickstart.

main.py and transactions.py stay short because this module does the rest:

- ``load_database_url()`` reads DATABASE_URL (from the environment or ``.env``) and refuses the
  untouched placeholder from ``.env.example``; unset means a local SQLite file.
- ``parse_database_url()`` understands every form Neon users paste (the guide's ``?ssl=true``,
  the console's ``?sslmode=require&channel_binding=require``, ``-pooler`` hosts, ...).
- ``tortoise_config()`` builds Tortoise's config dict from the parsed URL: TLS verified by
  default, statement cache off behind PgBouncer, connect retries within a deadline.
- ``connect()`` initialises Tortoise, creates the schema safely and always closes connections.
- ``run()`` runs a script's ``main()``: one clear line instead of a traceback, and a clean exit
  on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
from dotenv import load_dotenv
from tortoise import Tortoise, connections
from tortoise.exceptions import BaseORMException
from tortoise.utils import get_schema_sql

SQLITE_FILE = "quickstart.sqlite3"  # where the demo runs when DATABASE_URL is unset
MODELS = ["main"]  # the modules that define models: main.py's User

CONNECT_DEADLINE = 30.0  # seconds for all connect attempts together (URL: connect_timeout=)
ATTEMPT_TIMEOUT = 10.0  # seconds for one attempt: a host that accepts and never answers
SCHEMA_LOCK_ID = 7_245_019_388  # pg_advisory_xact_lock key: one schema creation at a time

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# libpq parameters that asyncpg has no use for: accepted and ignored, as libpq users expect.
IGNORED_PARAMS = {"gssencmode", "target_session_attrs", "keepalives"}


class DatabaseError(Exception):
    """A problem the user can fix; ``str()`` is the one line to print."""


# --- DATABASE_URL -> settings ---------------------------------------------------------------


@dataclass
class DatabaseSettings:
    """What a DATABASE_URL says, in the terms asyncpg and Tortoise need."""

    engine: str  # "postgres" or "sqlite"
    host: str = ""
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = ""
    sslmode: str = "verify-full"  # what we do, in libpq's words
    sslrootcert: str | None = None
    direct_tls: bool = False
    pooled: bool = False  # a Neon "-pooler" host: PgBouncer in transaction mode
    statement_cache_size: int | None = None
    connect_deadline: float = CONNECT_DEADLINE
    server_settings: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """Host, port and database: safe to print (no password)."""
        if self.engine == "sqlite":
            return f"SQLite file {self.database}"
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
        return f"{host}:{self.port}/{self.database}"

    @property
    def tls_description(self) -> str:
        return {
            "disable": "TLS off: not encrypted",
            "allow": "TLS only if the server insists: certificate not verified",
            "prefer": "TLS if the server offers it: certificate not verified",
        }.get(self.sslmode, "TLS on, certificate verified")

    def describe(self) -> str:
        """One line for the user: where we are connected and how safely."""
        if self.engine == "sqlite":
            return f"Connected to {self.where}"
        notes = [self.tls_description]
        if self.pooled:
            notes.append("pooled endpoint")
        if self.statement_cache_size == 0:
            notes.append("statement cache off")
        return f"Connected to PostgreSQL at {self.where} as {self.user} ({'; '.join(notes)})"


def load_database_url() -> str | None:
    """DATABASE_URL from the environment, or from ``.env``; None when unset or empty."""
    load_dotenv()
    return os.environ.get("DATABASE_URL", "").strip() or None


def parse_database_url(url: str) -> DatabaseSettings:
    """Parse a DATABASE_URL, raising DatabaseError with a one-line fix for anything wrong."""
    url = url.strip().strip("'\"").strip()
    if "<" in url or ">" in url:
        raise DatabaseError(
            "DATABASE_URL still holds the placeholder from .env.example: paste the connection "
            "string from Neon's Connect dialog into .env"
        )
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DatabaseError(
            "DATABASE_URL is not a URL: expected postgresql://USER:PASSWORD@HOST/DATABASE "
            "(copy it from Neon's Connect dialog)"
        )
    scheme = scheme.lower()
    if scheme == "sqlite":
        return DatabaseSettings(engine="sqlite", database=rest or "db.sqlite3")
    if scheme not in ("postgres", "postgresql"):
        raise DatabaseError(
            f"DATABASE_URL has the scheme '{scheme}://', which this project does not use: "
            "it must start with postgresql:// (or sqlite:// for a local file)"
        )

    parts = urlsplit(url)
    try:
        port = parts.port or 5432
        host = parts.hostname or ""
    except ValueError:
        raise DatabaseError(
            "DATABASE_URL is malformed: the port after the host must be a number, "
            "and a password with special characters must be percent-encoded"
        ) from None
    if not host:
        raise DatabaseError(
            "DATABASE_URL has no host: expected postgresql://USER:PASSWORD@HOST/DATABASE"
        )
    database = unquote(parts.path.lstrip("/"))
    if "@" in parts.path or "/" in database:  # an unencoded "/" in the password splits the URL
        raise DatabaseError(
            "DATABASE_URL is malformed: percent-encode special characters in the password "
            "(/ as %2F, @ as %40), as Neon's Connect dialog does"
        )
    if not database:
        raise DatabaseError(
            f"DATABASE_URL names no database: add it after the host ({host}/neondb)"
        )
    settings = DatabaseSettings(
        engine="postgres",
        host=host,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=database,
        pooled=host.split(".")[0].endswith("-pooler"),
    )
    _apply_query(settings, dict(parse_qsl(parts.query, keep_blank_values=True)))
    return settings


def _apply_query(settings: DatabaseSettings, params: dict[str, str]) -> None:
    """Apply the URL's query parameters (libpq's names) to the settings."""
    sslmode = params.pop("sslmode", None)
    ssl_flag = params.pop("ssl", None)  # the guide's form: ?ssl=true
    if sslmode is None and ssl_flag is not None:
        if ssl_flag.lower() not in ("true", "1", "yes", "on", "require"):
            raise DatabaseError(
                f"DATABASE_URL has ssl={ssl_flag}: to turn TLS off on purpose, use sslmode=disable"
            )
        sslmode = "require"
    if sslmode is None:  # nothing said: verify remote hosts, be libpq-like on this machine
        sslmode = "prefer" if settings.host in LOCAL_HOSTS else "verify-full"
    if sslmode not in SSLMODES:
        raise DatabaseError(
            f"DATABASE_URL has sslmode={sslmode}: use one of {', '.join(sorted(SSLMODES))}"
        )
    # require and verify-ca are verified in full: see the README ("TLS") for why.
    settings.sslmode = "verify-full" if sslmode in ("require", "verify-ca") else sslmode

    rootcert = params.pop("sslrootcert", None)
    if rootcert and rootcert != "system":
        if not Path(rootcert).expanduser().is_file():
            raise DatabaseError(f"DATABASE_URL has sslrootcert={rootcert}, but no such file exists")
        settings.sslrootcert = str(Path(rootcert).expanduser())

    negotiation = params.pop("sslnegotiation", "postgres")
    if negotiation not in ("postgres", "direct"):
        raise DatabaseError(
            f"DATABASE_URL has sslnegotiation={negotiation}: use postgres or direct"
        )
    if negotiation == "direct" and settings.sslmode != "verify-full":
        raise DatabaseError(f"DATABASE_URL has sslnegotiation=direct with sslmode={sslmode}: "
                            "direct TLS needs sslmode=require")
    settings.direct_tls = negotiation == "direct"
    if params.pop("channel_binding", "prefer") == "require" and settings.sslmode != "verify-full":
        raise DatabaseError(f"DATABASE_URL has channel_binding=require with sslmode={sslmode}: "
                            "use sslmode=require (verified TLS), as Neon's string does")

    if "statement_cache_size" in params:
        settings.statement_cache_size = _number(params.pop("statement_cache_size"), "statement_cache_size")
    elif settings.pooled:
        settings.statement_cache_size = 0  # PgBouncer in transaction mode: see the README
    if "connect_timeout" in params:
        settings.connect_deadline = _number(params.pop("connect_timeout"), "connect_timeout")
        if settings.connect_deadline < 1:
            raise DatabaseError("DATABASE_URL has connect_timeout=0: give the seconds to wait, "
                                "at least 1 (default 30)")
    for name in ("options", "application_name"):
        if name in params:
            settings.server_settings[name] = params.pop(name)
    unknown = sorted(set(params) - IGNORED_PARAMS)
    if unknown:
        raise DatabaseError(
            f"DATABASE_URL has the unknown parameter {unknown[0]}=...: remove it "
            "(supported: sslmode, sslrootcert, sslnegotiation, channel_binding, options, "
            "application_name, connect_timeout, statement_cache_size)"
        )


def _number(value: str, name: str) -> int:
    if not value.isdigit():
        raise DatabaseError(f"DATABASE_URL has {name}={value}: it must be a whole number")
    return int(value)


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


# --- settings -> Tortoise config ------------------------------------------------------------


def ssl_option(settings: DatabaseSettings) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl`` argument: a verifying context unless the URL explicitly opted out."""
    if settings.sslmode in ("disable", "allow", "prefer"):
        return False if settings.sslmode == "disable" else settings.sslmode
    return ssl.create_default_context(cafile=settings.sslrootcert)  # verifies name + chain


def tortoise_config(
    settings: DatabaseSettings | None = None, models: Iterable[str] = MODELS
) -> dict[str, Any]:
    """Tortoise's config dict for these settings (by default, from DATABASE_URL)."""
    if settings is None:
        settings = load_settings()
    if settings.engine == "sqlite":
        connection: dict[str, Any] = {
            "engine": "tortoise.backends.sqlite",
            "credentials": {"file_path": settings.database},
        }
    else:
        credentials: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "user": settings.user,
            # A callable: asyncpg calls it; Tortoise's debug log would print a third of a string.
            "password": lambda: settings.password,
            "database": settings.database,
            "ssl": ssl_option(settings),
            "direct_tls": settings.direct_tls,
            "server_settings": dict(settings.server_settings),
            "minsize": 1,
            "maxsize": 5,
            "connect": RetryingConnect(settings),
            "reset": keep_session,
            "connection_class": PromptCloseConnection,
        }
        if settings.statement_cache_size is not None:
            credentials["statement_cache_size"] = settings.statement_cache_size
        connection = {"engine": "tortoise.backends.asyncpg", "credentials": credentials}
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": list(models),
                "default_connection": "default",
                "migrations": "migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to send when a connection goes back to the pool.

    asyncpg has already rolled back any open transaction. Its default reset would also send
    ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` (one round trip per query):
    Tortoise creates none of that session state. See the README ("Connection pool reset").
    """


class PromptCloseConnection(asyncpg.Connection):  # type: ignore[misc]
    """Closes by sending Terminate without waiting for the server to hang up (a round trip).

    The server still logs a normal disconnect: it reads Terminate before it sees the socket close.
    """

    async def close(self, *, timeout: float | None = None) -> None:
        try:
            await super().close(timeout=0.000_001)
        except (TimeoutError, asyncio.TimeoutError, OSError):
            pass


# --- connecting: retries, deadlines and one clear line per failure --------------------------


NOT_READY = (
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    TimeoutError,
    asyncio.TimeoutError,
)


def is_not_ready(exc: BaseException, s: DatabaseSettings) -> bool:
    """True for connect errors that mean "not ready yet": worth waiting for."""
    if isinstance(exc, NOT_READY):
        return True
    if isinstance(exc, (socket.gaierror, ssl.SSLError)) or not isinstance(exc, OSError):
        return False  # unknown host, TLS failure, wrong password, unknown database, ...
    if "rejected SSL upgrade" in str(exc):
        return False  # a server without TLS: waiting will not give it TLS
    # Refused, reset, unreachable: a compute waking up, a server restarting. But a server
    # without direct TLS hangs up on the TLS hello: that one is final.
    return not (s.direct_tls and isinstance(exc, ConnectionResetError))


class RetryingConnect:
    """asyncpg's ``connect``, retried with backoff while the server is not ready yet.

    Used as the pool's ``connect`` hook, so every new connection gets it: the first one (a Neon
    compute waking from scale-to-zero) and any reconnect later on.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings

    async def __call__(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        s = self.settings
        deadline = time.monotonic() + s.connect_deadline
        delay, attempt = 0.25, 1
        while True:
            remaining = deadline - time.monotonic()
            kwargs["timeout"] = max(0.1, min(ATTEMPT_TIMEOUT, remaining))
            try:
                return await asyncpg.connect(*args, **kwargs)
            except Exception as exc:
                if not is_not_ready(exc, s):
                    raise DatabaseError(explain_connect_error(exc, s)) from exc
                reason = failure_reason(exc)
                remaining = deadline - time.monotonic()
                if remaining <= 0.05:
                    raise DatabaseError(
                        f"Could not connect to {s.where} within {s.connect_deadline:g} s "
                        f"({reason}, {attempt} attempts): check that the host and port in "
                        "DATABASE_URL are right and that the database is running"
                    ) from exc
                wait = min(delay, 4.0, remaining) * random.uniform(0.5, 1.0)  # backoff, jitter
                print(
                    f"Database at {s.host} not ready ({reason}); retrying in {wait:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                await asyncio.sleep(wait)
                delay, attempt = delay * 2, attempt + 1


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


# --- using it from a script -----------------------------------------------------------------


async def create_schema() -> None:
    """Create the tables that do not exist yet, one process at a time.

    On PostgreSQL it is a single message (one round trip): a transaction-scoped advisory lock,
    then the DDL, so that several processes starting at once (also through PgBouncer in
    transaction mode) never race on CREATE TABLE IF NOT EXISTS.
    """
    client = connections.get("default")
    if client.capabilities.dialect != "postgres":
        await Tortoise.generate_schemas(safe=True)
        return
    ddl = get_schema_sql(client, safe=True)
    # Several statements in one message run as one transaction: the lock is held to its end.
    await client.execute_script(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID});\n{ddl}")


@asynccontextmanager
async def connect(models: Iterable[str] = MODELS) -> AsyncIterator[DatabaseSettings]:
    """Initialise Tortoise from DATABASE_URL, create the schema, and close on every path."""
    settings = load_settings()
    await Tortoise.init(config=tortoise_config(settings, models))
    try:
        await create_schema()
        print(settings.describe())
        yield settings
    finally:
        await Tortoise.close_connections()


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a script's ``main()``: a clean exit on Ctrl-C or SIGTERM, and one line per error.

    Errors from the database or the network become one line; any other exception is a bug in
    the script and keeps its traceback.
    """
    try:
        asyncio.run(_cancel_on_signals(main))
    except Interrupted as exc:
        name = "Ctrl-C" if exc.signum == signal.SIGINT else "SIGTERM"
        _exit(128 + exc.signum, f"Interrupted ({name}): stopped cleanly; nothing unfinished was saved.")
    except KeyboardInterrupt:  # platforms without loop signal handlers (Windows)
        _exit(130, "Interrupted (Ctrl-C): stopped cleanly; nothing unfinished was saved.")
    except (DatabaseError, BaseORMException, asyncpg.PostgresError, asyncpg.InterfaceError,
            OSError, asyncio.TimeoutError) as exc:
        _exit(1, f"Error: {explain_error(exc)}")


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
    return f"{type(exc).__name__}: {first}"


def _exit(code: int, line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code)


async def _cancel_on_signals(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; on SIGINT or SIGTERM cancel it, so that ``finally`` blocks and rollbacks run."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:  # a second signal while cleaning up is ignored: cleanup is bounded
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            pass
    try:
        await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise


def __getattr__(name: str) -> Any:
    """``database.TORTOISE_ORM``: the config dict for the Tortoise CLI and web frameworks.

    Built from DATABASE_URL each time it is read (not at import), so that importing this
    module never fails.
    """
    if name == "TORTOISE_ORM":
        return tortoise_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
