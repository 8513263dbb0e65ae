"""DatabaseSettings: what a DATABASE_URL says, in the terms asyncpg and Tortoise need."""

from __future__ import annotations

from dataclasses import dataclass, field

CONNECT_DEADLINE = 30.0  # seconds for all connect attempts together (URL: connect_timeout=)
POOL_SIZE = 5  # connections one process may open at most (URL: pool_size=)
REPLICA = "DATABASE_URL_REPLICA"  # read replicas' strings, comma-separated (Prisma's name)


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
    direct_tls_fallback: bool = False  # direct by default (a Neon host): may fall back, once
    pooled: bool = False  # a Neon "-pooler" host: PgBouncer in transaction mode
    statement_cache_size: int | None = None
    connect_deadline: float = CONNECT_DEADLINE
    pool_size: int = POOL_SIZE
    # DATABASE_URL_REPLICA's read replicas: reads outside a transaction go there (replicas.py)
    replicas: list[DatabaseSettings] = field(default_factory=list)
    server_settings: dict[str, str] = field(default_factory=dict)
    variable: str = "DATABASE_URL"  # where the URL came from, for the error lines

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
        if self.replicas:
            count = len(self.replicas)
            notes.append(f"reads to {count} replica{'s' if count > 1 else ''}")
        who = f" as {self.user}" if self.user else ""
        return f"Connected to PostgreSQL at {self.where}{who} ({'; '.join(notes)})"
