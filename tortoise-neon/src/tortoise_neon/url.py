"""A connection string -> DatabaseSettings: every form Neon users paste, or one line saying what
to fix (never the password, nor a piece of it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tortoise_neon.database_settings import (
    INSECURE_TLS,
    PRIMARY,
    REPLICA,
    WEAK_SSLMODES,
    DatabaseSettings,
    is_local_host,
)
from tortoise_neon.errors import DatabaseError

NEON_DOMAIN = "neon.tech"  # its proxy takes direct TLS: the default there (docs/connecting.md)
NEON_CACHE = 100  # statements cached per connection on Neon's pooler (asyncpg's default size)
SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
IGNORED_PARAMS = {"gssencmode", "target_session_attrs", "keepalives"}  # libpq's, of no use here
ENCODE_PASSWORD = ("percent-encode special characters in the password (@ as %40, # as %23, "
                   "/ as %2F, ? as %3F)")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w -]*>")  # .env.example's <user>, <password>, <endpoint>
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def parse_database_url(url: str, variable: str = PRIMARY, *,
                       allow_insecure_tls: bool | None = None) -> DatabaseSettings:
    """The settings of ``url``, read from ``variable``; DatabaseError names it with the fix.
    ``allow_insecure_tls``: by default, DATABASE_ALLOW_INSECURE_TLS in the environment."""
    url = url.strip().strip("'\"").strip()
    if PLACEHOLDER.search(url):
        raise DatabaseError(f"{variable} still holds the placeholder from .env.example: paste the "
                            "connection string from Neon's Connect dialog into .env")
    if re.match(r"psql\s", url, re.IGNORECASE):
        raise DatabaseError(f"{variable} holds the psql command from Neon's Connect dialog: paste "
                            "only the URL inside the quotes (postgresql://...)")
    if any(not char.isprintable() and char != " " for char in url):
        raise DatabaseError(f"{variable} holds a line break, a tab or another invisible character: "
                            "put the URL on one line, as Neon's Connect dialog shows it")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DatabaseError(f"{variable} is not a URL: expected postgresql://USER:PASSWORD@HOST/"
                            "DATABASE (copy it from Neon's Connect dialog)")
    if not SCHEME.fullmatch(scheme):
        raise DatabaseError(
            f"{variable} has text before the URL: paste only the URL, from postgresql:// to its end"
            if "postgres" in scheme.lower() else
            f"{variable} must start with postgresql:// (or sqlite:// for a local file)")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return DatabaseSettings(engine="sqlite", database=rest or "db.sqlite3", variable=variable)
    if scheme not in ("postgres", "postgresql"):
        raise DatabaseError(f"{variable} has the scheme '{_shown(scheme)}://', which this project "
                            "does not use: it must start with postgresql:// (or sqlite:// for a "
                            "local file)")
    # A "#", or an "@" after the host's "/" or "?": a password cut in two by an unencoded character
    authority, *after_host = re.split(r"[/?]", rest, maxsplit=1)
    if "#" in rest or "@" in "".join(after_host):
        raise DatabaseError(f"{variable} is malformed: {ENCODE_PASSWORD}")
    if "," in authority.rpartition("@")[2]:
        raise DatabaseError(f"{variable} names several hosts: give one (this project connects "
                            "to a single host, as Neon's connection string does)")
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
        host = parts.hostname or ""
    except ValueError:
        raise DatabaseError(f"{variable} is malformed: the port after the host must be a number "
                            f"from 1 to 65535; {ENCODE_PASSWORD}") from None
    if not host:
        raise DatabaseError(
            f"{variable} has no host: expected postgresql://USER:PASSWORD@HOST/DATABASE")
    try:
        host.encode("idna")  # as asyncpg asks the resolver
    except UnicodeError:  # an empty label ("a..b"), a label over 63 characters, ...
        raise DatabaseError(f"{variable} has an invalid host name ({_shown(host)}): copy the host "
                            "again from Neon's Connect dialog") from None
    database = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username) if parts.username else None
    if "/" in database:
        raise DatabaseError(f"{variable} is malformed: {ENCODE_PASSWORD}")
    if not database:
        raise DatabaseError(
            f"{variable} names no database: add it after the host ({_shown(host)}/neondb)")
    if not (database + (user or "")).isprintable():
        raise DatabaseError(f"{variable} has a control character (%00 to %1F) in the user or "
                            "database name: copy the connection string again")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    return DatabaseSettings(
        engine="postgres", host=host, port=port, user=user,
        password=unquote(parts.password) if parts.password else None, database=database,
        pooled=host.split(".")[0].endswith("-pooler"), variable=variable,
        **_query_settings(params, host, variable, allow_insecure_tls))


def _query_settings(params: dict[str, str], host: str, variable: str,
                    allow_insecure_tls: bool | None) -> dict[str, Any]:
    """The settings the URL's query parameters (libpq's names) give."""
    found: dict[str, Any] = {}
    sslmode = params.pop("sslmode", None)
    ssl_flag = params.pop("ssl", None)  # the guide's form: ?ssl=true
    if sslmode is None and ssl_flag is not None:
        if ssl_flag.lower() not in ("true", "1", "yes", "on", "require"):
            raise DatabaseError(f"{variable} has ssl={_shown(ssl_flag)}: to turn TLS off on "
                                "purpose, use sslmode=disable")
        sslmode = "require"
    said = f"sslmode={sslmode}" if sslmode else "no sslmode (prefer, on this machine)"
    if sslmode is None:  # nothing said: verify remote hosts, be libpq-like on this machine
        sslmode = "prefer" if is_local_host(host) else "verify-full"
    if sslmode not in SSLMODES:
        raise DatabaseError(
            f"{variable} has sslmode={_shown(sslmode)}: use one of {', '.join(sorted(SSLMODES))}")
    # require and verify-ca are verified in full: docs/connecting.md ("TLS")
    found["sslmode"] = sslmode = "verify-full" if sslmode in ("require", "verify-ca") else sslmode
    rootcert = params.pop("sslrootcert", None)
    if rootcert and rootcert != "system":
        try:
            path = Path(rootcert).expanduser()
            exists = path.is_file()
        except (OSError, ValueError, RuntimeError):  # too long, a NUL, ~user unknown
            exists = False
        if not exists:
            raise DatabaseError(
                f"{variable} has sslrootcert={_shown(rootcert)}, but no such file exists")
        found["sslrootcert"] = str(path)
    negotiation = params.pop("sslnegotiation", None)
    if negotiation not in (None, "postgres", "direct"):
        raise DatabaseError(
            f"{variable} has sslnegotiation={_shown(negotiation)}: use postgres or direct")
    if negotiation == "direct" and sslmode != "verify-full":
        raise DatabaseError(f"{variable} has sslnegotiation=direct with {said}: "
                            "direct TLS needs sslmode=require")
    default_direct = negotiation is None and sslmode == "verify-full" and is_neon(host)
    found["direct_tls"] = negotiation == "direct" or default_direct  # one round trip less
    found["direct_tls_fallback"] = default_direct
    if params.pop("channel_binding", "prefer") == "require" and sslmode != "verify-full":
        raise DatabaseError(f"{variable} has channel_binding=require with {said}: "
                            "use sslmode=require (verified TLS), as Neon's string does")
    if sslmode in WEAK_SSLMODES and not is_local_host(host):
        if allow_insecure_tls is None:
            allow_insecure_tls = insecure_tls_allowed(os.environ.get(INSECURE_TLS))
        if not allow_insecure_tls:  # asked for in so many words, or refused
            raise DatabaseError(insecure_tls_line(variable, sslmode, host))
        found["allow_insecure_tls"] = True
    if "statement_cache_size" in params:
        found["statement_cache_size"] = _number(params, "statement_cache_size", variable)
    elif host.split(".")[0].endswith("-pooler"):  # PgBouncer in transaction mode
        # Neon's keeps prepared statements (1.21+, max_prepared_statements); others may not
        found["statement_cache_size"] = NEON_CACHE if is_neon(host) else 0
    if "pool_size" in params:
        fix = "give the most connections one process may open, from 1 to 1000 (default 5)"
        found["pool_size"] = _number(params, "pool_size", variable, fix, most=1000)
    if "connect_timeout" in params:
        fix = "give the seconds to wait, at least 1 (default 30)"
        found["connect_deadline"] = _number(params, "connect_timeout", variable, fix)
    names = ("options", "application_name")
    found["server_settings"] = {name: params.pop(name) for name in names if name in params}
    unknown = sorted(set(params) - IGNORED_PARAMS)
    if unknown:
        raise DatabaseError(
            f"{variable} has the unknown parameter {_shown(unknown[0])}=...: remove it "
            "(supported: sslmode, sslrootcert, sslnegotiation, channel_binding, options, "
            "application_name, connect_timeout, statement_cache_size, pool_size)")
    return found


def parse_replica_urls(value: str, variable: str = REPLICA, *,
                       allow_insecure_tls: bool | None = None) -> tuple[DatabaseSettings, ...]:
    """DATABASE_URL_REPLICA: one connection string, or several separated by commas."""
    replicas = []
    for url in re.split(r",\s*(?=['\"]?postgres(?:ql)?://)", value.strip(), flags=re.IGNORECASE):
        replica = parse_database_url(url, variable, allow_insecure_tls=allow_insecure_tls)
        if replica.engine != "postgres":
            raise DatabaseError(f"{variable} must hold postgresql:// connection strings (a "
                                "read replica's, from Neon's Connect dialog)")
        replicas.append(replica)
    return tuple(replicas)


def insecure_tls_allowed(value: str | None) -> bool:
    """DATABASE_ALLOW_INSECURE_TLS's value: 1 allows connections without verified TLS to hosts
    not on this machine."""
    value = (value or "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise DatabaseError(f"{INSECURE_TLS}={_shown(value)} is not understood: set it to 1 to allow "
                        "sslmode=disable, allow or prefer to a host not on this machine, or unset it")


def insecure_tls_line(variable: str, sslmode: str, host: str) -> str:
    risk = ("the password and the data would cross the network unencrypted"
            if sslmode == "disable" else
            "anything on the way could turn TLS off or pose as the server, and read the password")
    return (f"{variable} has sslmode={sslmode} for {_shown(host, 100)}, a host not on this "
            f"machine: {risk}; use sslmode=require (TLS, certificate verified), or set "
            f"{INSECURE_TLS}=1 if you accept that risk (docs/connecting.md)")


def is_neon(host: str) -> bool:
    """A host under neon.tech: Neon's proxy, which takes direct TLS."""
    host = host.rstrip(".")
    return host == NEON_DOMAIN or host.endswith("." + NEON_DOMAIN)


def _number(params: dict[str, str], name: str, variable: str, fix: str = "",
            most: int = 999_999_999) -> int:
    """``name``'s whole number; with ``fix`` (the advice if not), from 1 to ``most``."""
    value = params.pop(name)
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise DatabaseError(f"{variable} has {name}={_shown(value)}: it must be a whole number")
    if fix and not 1 <= int(value) <= most:
        raise DatabaseError(f"{variable} has {name}={int(value)}: {fix}")
    return int(value)


def _shown(value: str, limit: int = 40) -> str:
    """A value from the URL as a line may show it: printable and short."""
    value = "".join(char if char.isprintable() else "?" for char in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."
