"""DatabaseSettings: what one connection string says, in the terms asyncpg and Tortoise need."""

from __future__ import annotations

from dataclasses import dataclass, field

CONNECT_DEADLINE = 30.0  # seconds for all connect attempts together (URL: connect_timeout=)
POOL_SIZE = 5  # connections one process may open at most (URL: pool_size=)
PRIMARY = "DATABASE_URL"
UNPOOLED = "DATABASE_URL_UNPOOLED"  # Neon's name for the direct string: for migrations
REPLICA = "DATABASE_URL_REPLICA"  # read replicas' strings, comma-separated (Prisma's name)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}  # the only hosts unverified TLS may go to
INSECURE_TLS = "DATABASE_ALLOW_INSECURE_TLS"  # =1: sslmode=disable/allow/prefer to remote hosts
WEAK_SSLMODES = ("disable", "allow", "prefer")  # not encrypted, or not verified
TLS_NOTES = {  # describe()'s words for each of them
    "disable": "TLS off: not encrypted",
    "allow": "TLS only if the server insists: certificate not verified",
    "prefer": "TLS if the server offers it: certificate not verified",
}


def is_local_host(host: str) -> bool:
    """This machine: localhost, 127.0.0.1, ::1, or a Unix socket's directory (a path)."""
    return host in LOCAL_HOSTS or host.startswith("/")


@dataclass(frozen=True)
class DatabaseSettings:
    """One connection string's settings; ``variable`` is its role (PRIMARY, UNPOOLED, REPLICA)."""

    engine: str  # "postgres" or "sqlite"
    host: str = ""
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = ""
    sslmode: str = "verify-full"  # what we do, in libpq's words
    sslrootcert: str | None = None
    direct_tls: bool = False
    direct_tls_fallback: bool = False  # direct by default (a Neon host): may fall back, once
    pooled: bool = False  # a Neon "-pooler" host: PgBouncer in transaction mode
    statement_cache_size: int | None = None
    connect_deadline: float = CONNECT_DEADLINE
    pool_size: int = POOL_SIZE
    replicas: tuple[DatabaseSettings, ...] = ()  # DATABASE_URL_REPLICA's (replicas.py)
    server_settings: dict[str, str] = field(default_factory=dict)
    variable: str = PRIMARY
    allow_insecure_tls: bool = False  # DATABASE_ALLOW_INSECURE_TLS=1 (checked in tls.py)

    @property
    def verified(self) -> bool:
        """TLS with the certificate and host name verified (or a local SQLite file)."""
        return self.engine == "sqlite" or self.sslmode not in WEAK_SSLMODES

    @property
    def insecure_remote(self) -> bool:
        """Not verified, to a host not on this machine: what DATABASE_ALLOW_INSECURE_TLS allows."""
        return not self.verified and not is_local_host(self.host)

    @property
    def address(self) -> str:
        """Host and port, as ``host:port`` (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def where(self) -> str:
        """Host, port and database: safe to print (no password)."""
        if self.engine == "sqlite":
            return f"SQLite file {self.database}"
        return f"{self.address}/{self.database}"

    def describe(self) -> str:
        """One line for the user: where we are connected and how safely."""
        if self.engine == "sqlite":
            return f"Connected to {self.where}"
        notes = [TLS_NOTES.get(self.sslmode, "TLS on, certificate verified")]
        if self.insecure_remote:
            notes.append(f"a host not on this machine: allowed by {INSECURE_TLS}")
        if self.pooled:
            notes.append("pooled endpoint")
        if self.statement_cache_size == 0:
            notes.append("statement cache off")
        if self.replicas:
            count = len(self.replicas)
            notes.append(f"reads to {count} replica{'s' if count > 1 else ''}")
        who = f" as {self.user}" if self.user else ""
        return f"Connected to PostgreSQL at {self.where}{who} ({'; '.join(notes)})"
