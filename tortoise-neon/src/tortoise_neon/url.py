"""DATABASE_URL -> DatabaseSettings: every form Neon users paste, or one line saying what to fix."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from tortoise_neon.errors import DatabaseError
from tortoise_neon.url_settings import INSECURE_TLS, DatabaseSettings, is_local_host

NEON_DOMAIN = "neon.tech"  # its proxy takes direct TLS: the default there (docs/connecting.md)
NEON_CACHE = 100  # statements cached per connection on Neon's pooler (asyncpg's default size)
SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# libpq parameters that asyncpg has no use for: accepted and ignored, as libpq users expect.
IGNORED_PARAMS = {"gssencmode", "target_session_attrs", "keepalives"}
ENCODE_PASSWORD = ("percent-encode special characters in the password (@ as %40, # as %23, "
                   "/ as %2F, ? as %3F)")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w -]*>")  # .env.example's <user>, <password>, <endpoint>
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def parse_database_url(url: str, *, allow_insecure_tls: bool | None = None) -> DatabaseSettings:
    """Parse a DATABASE_URL, raising DatabaseError with a one-line fix for anything wrong.

    The line never holds the password, nor a piece of it: a password with unencoded special
    characters splits the URL in odd places, so what looks like a host may be part of it.

    ``sslmode=disable``, ``allow`` or ``prefer`` to a host not on this machine is refused unless
    ``allow_insecure_tls`` (by default: DATABASE_ALLOW_INSECURE_TLS=1 in the environment).
    """
    url = url.strip().strip("'\"").strip()
    if PLACEHOLDER.search(url):
        raise DatabaseError(
            "DATABASE_URL still holds the placeholder from .env.example: paste the connection "
            "string from Neon's Connect dialog into .env"
        )
    if re.match(r"psql\s", url, re.IGNORECASE):
        raise DatabaseError(
            "DATABASE_URL holds the psql command from Neon's Connect dialog: paste only the URL "
            "inside the quotes (postgresql://...)"
        )
    if any(not char.isprintable() and char != " " for char in url):
        raise DatabaseError(
            "DATABASE_URL holds a line break, a tab or another invisible character: put the URL "
            "on one line, as Neon's Connect dialog shows it"
        )
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DatabaseError(
            "DATABASE_URL is not a URL: expected postgresql://USER:PASSWORD@HOST/DATABASE "
            "(copy it from Neon's Connect dialog)"
        )
    if not SCHEME.fullmatch(scheme):
        raise DatabaseError(
            "DATABASE_URL has text before the URL: paste only the URL, from postgresql:// to its "
            "end" if "postgres" in scheme.lower() else
            "DATABASE_URL must start with postgresql:// (or sqlite:// for a local file)"
        )
    scheme = scheme.lower()
    if scheme == "sqlite":
        return DatabaseSettings(engine="sqlite", database=rest or "db.sqlite3")
    if scheme not in ("postgres", "postgresql"):
        raise DatabaseError(
            f"DATABASE_URL has the scheme '{_shown(scheme)}://', which this project does not use: "
            "it must start with postgresql:// (or sqlite:// for a local file)"
        )
    # "#" starts a URL's fragment, and an "@" after the host's "/" or "?" means a password
    # split by an unencoded "/" or "?": either way the password is cut in two.
    after_host = re.search(r"[/?].*", rest)
    if "#" in rest or (after_host and "@" in after_host.group()):
        raise DatabaseError(f"DATABASE_URL is malformed: {ENCODE_PASSWORD}")
    if "," in re.split(r"[/?]", rest, maxsplit=1)[0].rpartition("@")[2]:
        raise DatabaseError("DATABASE_URL names several hosts: give one (this project connects "
                            "to a single host, as Neon's connection string does)")

    try:
        parts = urlsplit(url)
        port = parts.port or 5432
        host = parts.hostname or ""
    except ValueError:
        raise DatabaseError(
            "DATABASE_URL is malformed: the port after the host must be a number from 1 to "
            f"65535; {ENCODE_PASSWORD}"
        ) from None
    if not host:
        raise DatabaseError(
            "DATABASE_URL has no host: expected postgresql://USER:PASSWORD@HOST/DATABASE"
        )
    if not _is_host_name(host):
        raise DatabaseError(
            f"DATABASE_URL has an invalid host name ({_shown(host)}): copy the host again from "
            "Neon's Connect dialog"
        )
    database = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username) if parts.username else None
    if "/" in database:
        raise DatabaseError(f"DATABASE_URL is malformed: {ENCODE_PASSWORD}")
    if not database:
        raise DatabaseError(
            f"DATABASE_URL names no database: add it after the host ({_shown(host)}/neondb)"
        )
    if not (database + (user or "")).isprintable():
        raise DatabaseError("DATABASE_URL has a control character (%00 to %1F) in the user or "
                            "database name: copy the connection string again")
    settings = DatabaseSettings(
        engine="postgres",
        host=host,
        port=port,
        user=user,
        password=unquote(parts.password) if parts.password else None,
        database=database,
        pooled=host.split(".")[0].endswith("-pooler"),
    )
    _apply_query(settings, dict(parse_qsl(parts.query, keep_blank_values=True)),
                 allow_insecure_tls)
    return settings


def insecure_tls_allowed() -> bool:
    """DATABASE_ALLOW_INSECURE_TLS from the environment (or .env, once loaded): 1 allows
    connections without verified TLS to hosts not on this machine."""
    value = os.environ.get(INSECURE_TLS, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise DatabaseError(f"{INSECURE_TLS}={_shown(value)} is not understood: set it to 1 to allow "
                        "sslmode=disable, allow or prefer to a host not on this machine, or unset it")


def refuse_insecure_tls(settings: DatabaseSettings) -> None:
    """sslmode=disable, allow or prefer to a host not on this machine, not allowed by the user:
    one line, with the cause and the fix (never the password)."""
    if not settings.insecure_remote or settings.allow_insecure_tls:
        return
    risk = ("the password and the data would cross the network unencrypted"
            if settings.sslmode == "disable" else
            "anything on the way could turn TLS off or pose as the server, and read the password")
    raise DatabaseError(
        f"{settings.variable} has sslmode={settings.sslmode} for {_shown(settings.host, 100)}, a host "
        f"not on this machine: {risk}; use sslmode=require (TLS, certificate verified), or set "
        f"{INSECURE_TLS}=1 if you accept that risk (docs/connecting.md)")


def _apply_query(settings: DatabaseSettings, params: dict[str, str],
                 allow_insecure_tls: bool | None = None) -> None:
    """Apply the URL's query parameters (libpq's names) to the settings."""
    sslmode = params.pop("sslmode", None)
    ssl_flag = params.pop("ssl", None)  # the guide's form: ?ssl=true
    if sslmode is None and ssl_flag is not None:
        if ssl_flag.lower() not in ("true", "1", "yes", "on", "require"):
            raise DatabaseError(
                f"DATABASE_URL has ssl={_shown(ssl_flag)}: to turn TLS off on purpose, use sslmode=disable"
            )
        sslmode = "require"
    said = f"sslmode={sslmode}" if sslmode else "no sslmode (prefer, on this machine)"
    if sslmode is None:  # nothing said: verify remote hosts, be libpq-like on this machine
        sslmode = "prefer" if is_local_host(settings.host) else "verify-full"
    if sslmode not in SSLMODES:
        raise DatabaseError(
            f"DATABASE_URL has sslmode={_shown(sslmode)}: use one of {', '.join(sorted(SSLMODES))}"
        )
    # require and verify-ca are verified in full: see docs/connecting.md ("TLS") for why.
    settings.sslmode = "verify-full" if sslmode in ("require", "verify-ca") else sslmode

    rootcert = params.pop("sslrootcert", None)
    if rootcert and rootcert != "system":
        try:
            path = Path(rootcert).expanduser()
            found = path.is_file()
        except (OSError, ValueError, RuntimeError):  # too long, a NUL, ~user unknown
            found = False
        if not found:
            raise DatabaseError(
                f"DATABASE_URL has sslrootcert={_shown(rootcert)}, but no such file exists")
        settings.sslrootcert = str(path)

    negotiation = params.pop("sslnegotiation", None)
    if negotiation not in (None, "postgres", "direct"):
        raise DatabaseError(
            f"DATABASE_URL has sslnegotiation={_shown(negotiation)}: use postgres or direct"
        )
    if negotiation == "direct" and settings.sslmode != "verify-full":
        raise DatabaseError(f"DATABASE_URL has sslnegotiation=direct with {said}: "
                            "direct TLS needs sslmode=require")
    settings.direct_tls = negotiation == "direct"
    if negotiation is None and settings.sslmode == "verify-full" and is_neon(settings.host):
        settings.direct_tls = settings.direct_tls_fallback = True  # one round trip less
    if params.pop("channel_binding", "prefer") == "require" and settings.sslmode != "verify-full":
        raise DatabaseError(f"DATABASE_URL has channel_binding=require with {said}: "
                            "use sslmode=require (verified TLS), as Neon's string does")
    if settings.insecure_remote:  # asked for in so many words, or refused (docs/connecting.md)
        settings.allow_insecure_tls = (insecure_tls_allowed() if allow_insecure_tls is None
                                       else allow_insecure_tls)
        refuse_insecure_tls(settings)

    if "statement_cache_size" in params:
        settings.statement_cache_size = _number(params.pop("statement_cache_size"),
                                                "statement_cache_size")
    elif settings.pooled:  # PgBouncer in transaction mode: docs/connecting.md
        # Neon's keeps prepared statements (1.21+, max_prepared_statements); others may not
        settings.statement_cache_size = NEON_CACHE if is_neon(settings.host) else 0
    if "pool_size" in params:
        settings.pool_size = _number(params.pop("pool_size"), "pool_size")
        if not 1 <= settings.pool_size <= 1000:
            raise DatabaseError(f"DATABASE_URL has pool_size={settings.pool_size}: give the most "
                                "connections one process may open, from 1 to 1000 (default 5)")
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
            f"DATABASE_URL has the unknown parameter {_shown(unknown[0])}=...: remove it "
            "(supported: sslmode, sslrootcert, sslnegotiation, channel_binding, options, "
            "application_name, connect_timeout, statement_cache_size, pool_size)"
        )


def parse_replica_urls(value: str, variable: str = "DATABASE_URL_REPLICA", *,
                       allow_insecure_tls: bool | None = None) -> list[DatabaseSettings]:
    """DATABASE_URL_REPLICA: one connection string, or several separated by commas."""
    replicas = []
    for url in re.split(r",\s*(?=['\"]?postgres(?:ql)?://)", value.strip(), flags=re.IGNORECASE):
        try:
            settings = parse_database_url(url, allow_insecure_tls=allow_insecure_tls)
        except DatabaseError as exc:  # the line names the variable that holds the mistake
            raise DatabaseError(str(exc).replace("DATABASE_URL", variable, 1)) from None
        if settings.engine != "postgres":
            raise DatabaseError(f"{variable} must hold postgresql:// connection strings (a "
                                "read replica's, from Neon's Connect dialog)")
        settings.variable = variable
        replicas.append(settings)
    return replicas


def is_neon(host: str) -> bool:
    """A host under neon.tech: Neon's proxy, which takes direct TLS."""
    host = host.rstrip(".")
    return host == NEON_DOMAIN or host.endswith("." + NEON_DOMAIN)


def _number(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise DatabaseError(f"DATABASE_URL has {name}={_shown(value)}: it must be a whole number")
    return int(value)


def _shown(value: str, limit: int = 40) -> str:
    """A value from the URL as a line may show it: printable and short."""
    value = "".join(char if char.isprintable() else "?" for char in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _is_host_name(host: str) -> bool:
    """True for a name or address the resolver can be asked about (asyncpg encodes it: IDNA)."""
    try:
        host.encode("idna")
    except UnicodeError:  # an empty label ("a..b"), a label over 63 characters, ...
        return False
    return True
