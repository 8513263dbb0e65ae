"""One line for a connection that could not be made: Neon's proxy, out of slots, TLS, DNS."""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

from tortoise_neon.database_settings import DatabaseSettings, is_local_host
from tortoise_neon.errors import failure_reason
from tortoise_neon.url import is_neon

import asyncpg


@dataclass(frozen=True)
class NeonFailure:
    """A failure Neon's proxy reports itself (SQLSTATE XX000: the text tells which)."""

    words: str  # a regular expression for the start of the proxy's message
    wait: bool  # waiting can fix it: retried within the connect deadline
    line: str  # fills in host label endpoint user database message deadline attempts use_pooler


CONSOLE = "Neon console"
NO_DATABASE = NeonFailure(r'database ".*" does not exist', False,
                          "Database {database} does not exist at {host}: fix the name after the "
                          "host in {variable} (Neon's default is neondb)")
NEON_FAILURES = (
    NeonFailure(r"password authentication failed for user", False,
                "Password authentication failed for user {user} at {host}: copy the connection "
                "string again from Neon's Connect dialog; on Neon this also means an unknown role "
                "or a typo in the endpoint id ({endpoint})"),
    NO_DATABASE,
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
WORKERS_DOC = "docs/replicas-and-workers.md"
# 53300, or its text as Neon's proxy re-sends it (XX000).
SLOTS_FULL = re.compile(r"remaining connection slots are reserved|(sorry, )?too many clients "
                        r"already")


def neon_failure(exc: BaseException) -> NeonFailure | None:
    """The Neon proxy failure this is, if any."""
    if isinstance(exc, asyncpg.InternalServerError):  # XX000
        for failure in NEON_FAILURES:
            if re.match(failure.words, str(exc)):
                return failure
    return None


def explain_neon(failure: NeonFailure, exc: BaseException, s: DatabaseSettings,
                 attempts: int = 1) -> str:
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


def is_slots_full(exc: BaseException) -> bool:
    """The compute has no free connection slot (53300), directly or through Neon's proxy."""
    return isinstance(exc, asyncpg.TooManyConnectionsError) or (
        isinstance(exc, asyncpg.InternalServerError) and bool(SLOTS_FULL.match(str(exc))))


def explain_slots_full(exc: BaseException, s: DatabaseSettings, *, held: int = 0,
                       waited: float = 0) -> str:
    """The line for a compute out of connection slots; ``held``: the connections this process
    goes on with."""
    reason = f"{s.variable} at {s.host}: {str(exc).splitlines()[0]}"
    if not is_neon(s.host):
        fix = (f"put a pooler such as PgBouncer in front of the server, lower pool_size in "
               f"{s.variable}, or raise the server's max_connections, so that processes x "
               f"pool_size fits max_connections (see {WORKERS_DOC})")
    else:
        pooler = "" if s.pooled else "use the pooled connection string (the -pooler host), or "
        fix = (f"{pooler}lower pool_size in {s.variable} so that processes x pool_size fits "
               f"the compute's max_connections (see {WORKERS_DOC})")
    if held:
        return (f"The database has no free connection slot ({reason}): this process goes on "
                f"with the {held} connection{'s' if held > 1 else ''} it holds; {fix}")
    return (f"The database had no free connection slot for {waited:g} s ({reason}): close "
            f"connections other programs hold, or {fix}")


def is_direct_tls_failure(exc: BaseException, s: DatabaseSettings) -> bool:
    """Direct TLS the server broke off or refused (before PostgreSQL 17, or without ALPN):
    waiting will not fix it."""
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
        return (f"Password authentication failed for user {s.user} at {s.host}: copy the "
                "connection string again from Neon's Connect dialog (or reset the role's "
                "password)")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):  # PostgreSQL's 3D000: the same line
        return explain_neon(NO_DATABASE, exc, s)
    if isinstance(exc, asyncpg.PostgresError) and s.sslmode in ("disable", "allow") and any(
            word in message.lower() for word in ("no encryption", "ssl", "insecure")):
        return f"{s.host} requires TLS: remove sslmode={s.sslmode} from {s.variable}"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"The server refused user {s.user}: {message.splitlines()[0]}"
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN:
        return f"Could not look up the host {s.host} (DNS not answering): check your network"
    if isinstance(exc, socket.gaierror):
        return f"Cannot find the host {s.host}: check the host name in {s.variable} for a typo"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed for {s.host} ({exc.verify_message}): "
                "check the host name, or give the server's CA with sslrootcert=/path/to/ca.pem")
    if is_direct_tls_failure(exc, s):
        return (f"Direct TLS failed at {s.host} ({failure_reason(exc)}): the server may not "
                "support it (PostgreSQL 17+ and Neon do); remove sslnegotiation=direct from "
                f"{s.variable}")
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed at {s.host} ({exc.reason or exc}): check sslmode in {s.variable}"
    if "rejected SSL upgrade" in message and not is_local_host(s.host):
        # Never "add sslmode=disable": anyone on the way can send this answer (docs/connecting.md).
        sent = ", so nothing was sent (not the password either)" if s.verified else ""
        return (f"TLS was refused on the way to {s.address}: the server, or a device between, "
                f"answered that it does not speak TLS{sent}; check the host and port in "
                f"{s.variable}, and that the server has TLS on")
    if "rejected SSL upgrade" in message:
        return (f"{s.host} does not offer TLS: for a trusted server on your own network, add "
                f"sslmode=disable to {s.variable}")
    return f"Could not connect to {s.where}: {failure_reason(exc)}"
