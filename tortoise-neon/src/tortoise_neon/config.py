"""Tortoise ORM's config: the model modules (settings.MODELS) and the connection from the URL."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterable
from typing import Any

from tortoise_neon.connecting import RetryingConnect
from tortoise_neon.environment import load_settings
from tortoise_neon.tls import ssl_option
from tortoise_neon.url_settings import DatabaseSettings

import asyncpg

DEFAULT_MODELS = ["main"]  # without a settings.py: main.py's User

# Seconds a connection may sit idle in a process's pool before it is closed (asyncpg's
# max_inactive_connection_lifetime), read when the config is built: set it before.
# Direct string: each connection holds one of the compute's few slots, so a burst's extra ones
# go back 10 s after their last statement (docs/replicas-and-workers.md, "Idle connections").
IDLE_TIMEOUT = 10.0
# Pooled string (the -pooler host): a connection holds a slot of Neon's PgBouncer (10,000), not
# the compute's, and reopening one costs a TLS handshake and authentication: kept as asyncpg
# keeps them by default.
POOLED_IDLE_TIMEOUT = 300.0


def project_models() -> list[str]:
    """``MODELS`` from the project's ``settings.py`` (beside main.py), or ``["main"]``."""
    try:
        project = importlib.import_module("settings")
    except ModuleNotFoundError as exc:
        if exc.name != "settings":
            raise
        return list(DEFAULT_MODELS)
    return list(getattr(project, "MODELS", DEFAULT_MODELS))


def __getattr__(name: str) -> Any:
    """``MODELS``: the project's settings.MODELS, read when first used, not at import, so that
    importing the package imports nothing of the project."""
    if name == "MODELS":
        return project_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_modules(models: Iterable[str]) -> list[str]:
    """MODELS as Tortoise must see them in this process.

    ``python main.py`` runs main.py as the module ``__main__``: its User class is registered
    under that name, so that the script's own class is the one initialised.
    """
    running = getattr(sys.modules.get("__main__"), "__file__", None)
    resolved = []
    for name in models:
        spec = importlib.util.find_spec(name) if name != "__main__" else None
        same = running and spec and spec.origin and _same_file(spec.origin, running)
        resolved.append("__main__" if same else name)
    return resolved


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def tortoise_config(
    settings: DatabaseSettings | None = None, models: Iterable[str] | None = None,
    migrations: str = "migrations", *, announce: bool | None = None,
) -> dict[str, Any]:
    """Tortoise's config dict for these settings (by default, from DATABASE_URL), for ``models``
    (by default settings.MODELS) and the migrations in the package ``migrations``.

    ``announce``: the first connection logs the line the scripts print ("Connected to
    PostgreSQL at ... (TLS on, certificate verified)") through the ``database`` logger, once
    per process. By default, when the settings are read here: an app's ``tortoise_config()``.
    """
    if models is None:
        models = project_models()
    if announce is None:
        announce = settings is None
    if settings is None:
        settings = load_settings()
    if settings.engine == "sqlite":
        connection: dict[str, Any] = {
            "engine": "tortoise.backends.sqlite",
            "credentials": {"file_path": settings.database},
        }
    else:
        credentials = pool_credentials(settings, announce=announce)
        if settings.replicas:  # DATABASE_URL_REPLICA: reads go there (replicas.py)
            credentials["replicas"] = [pool_credentials(r) for r in settings.replicas]
        # Tortoise's asyncpg client with retries and the statement-cache switch (client.py)
        connection = {"engine": "tortoise_neon.client", "credentials": credentials}
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": model_modules(models),
                "default_connection": "default",
                "migrations": migrations,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def pool_credentials(settings: DatabaseSettings, *, announce: bool = False) -> dict[str, Any]:
    """The connection pool's settings for one server, in Tortoise's terms (``announce``: see
    ``tortoise_config``)."""
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
        # No floor: connections that a suspend closed are not reopened until a request needs
        # one, so an idle app lets Neon scale the compute to zero (docs/app-on-neon.md).
        "minsize": 0,
        "maxsize": settings.pool_size,  # pool_size= in the URL (docs/replicas-and-workers.md)
        # An idle connection is closed after this many seconds (and not reopened: no floor)
        "max_inactive_connection_lifetime": idle_timeout(settings),
        "connect": RetryingConnect(settings, announce=announce),
        "reset": keep_session,
        "connection_class": PromptCloseConnection,
    }
    if settings.statement_cache_size is not None:
        credentials["statement_cache_size"] = settings.statement_cache_size
    return credentials


def idle_timeout(settings: DatabaseSettings) -> float:
    """Seconds an idle connection to this server is kept: ``IDLE_TIMEOUT`` on a direct string,
    ``POOLED_IDLE_TIMEOUT`` on a pooled one."""
    return POOLED_IDLE_TIMEOUT if settings.pooled else IDLE_TIMEOUT


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to send when a connection goes back to the pool.

    asyncpg has already rolled back any open transaction. Its default reset would also send
    ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` (one round trip per query):
    Tortoise creates none of that session state. See docs/connecting.md ("Pool reset").
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
