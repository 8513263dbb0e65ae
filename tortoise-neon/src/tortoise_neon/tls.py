"""TLS for asyncpg: a context that verifies the certificate and the host name, with ALPN."""

from __future__ import annotations

import ssl

from tortoise_neon.database_settings import WEAK_SSLMODES, DatabaseSettings
from tortoise_neon.errors import DatabaseError
from tortoise_neon.url import insecure_tls_line

ALPN = "postgresql"  # PostgreSQL 17+ refuses direct TLS without it; asyncpg sets it only on its own


def ssl_option(settings: DatabaseSettings) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl`` argument: a verifying context unless the URL opted out (to a host not
    on this machine, only with ``allow_insecure_tls``)."""
    if settings.insecure_remote and not settings.allow_insecure_tls:  # settings made by hand
        raise DatabaseError(insecure_tls_line(settings.variable, settings.sslmode, settings.host))
    if settings.sslmode in WEAK_SSLMODES:
        return False if settings.sslmode == "disable" else settings.sslmode
    try:
        context = ssl.create_default_context(cafile=settings.sslrootcert)  # verifies name + chain
    except ssl.SSLError:
        raise DatabaseError(f"{settings.variable} has sslrootcert={settings.sslrootcert}, which is "
                            "not a CA certificate file (PEM): give the server's CA file") from None
    context.set_alpn_protocols([ALPN])
    return context
