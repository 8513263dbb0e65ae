"""Tortoise ORM's config: the model modules (settings.MODELS) and the pools' options."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterable
from typing import Any

from tortoise_neon.connecting import ConnectPolicy, RetryingConnect
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.environment import load_settings
from tortoise_neon.tls import ssl_option

import asyncpg

DEFAULT_MODELS = ["main"]  # without a settings.py: main.py's User
# Seconds an idle connection stays in a pool: docs/replicas-and-workers.md, "Idle connections"
IDLE_TIMEOUT = 10.0  # direct: it holds one of the compute's few slots
POOLED_IDLE_TIMEOUT = 300.0  # pooled: one of PgBouncer's 10,000; reopening costs a handshake


def project_models() -> list[str]:
    """``MODELS`` from the project's ``settings.py`` (beside main.py), or ``["main"]``."""
    try:
        project = importlib.import_module("settings")
    except ModuleNotFoundError as exc:
        if exc.name != "settings":
            raise
        return list(DEFAULT_MODELS)
    return list(getattr(project, "MODELS", DEFAULT_MODELS))


def model_modules(models: Iterable[str]) -> list[str]:
    """MODELS as Tortoise must see them: under ``python main.py``, main.py is ``__main__``, and
    its classes are the ones to initialise."""
    running = getattr(sys.modules.get("__main__"), "__file__", None)
    return ["__main__" if running and _is_file(name, running) else name for name in models]


def _is_file(module: str, path: str) -> bool:
    """Whether ``module`` (found, not imported) is the file at ``path``."""
    spec = importlib.util.find_spec(module) if module != "__main__" else None
    try:
        return bool(spec and spec.origin and os.path.samefile(spec.origin, path))
    except OSError:
        return False


def tortoise_config(
    settings: DatabaseSettings | None = None, models: Iterable[str] | None = None,
    migrations: str = "migrations", *, announce: bool | None = None,
) -> dict[str, Any]:
    """Tortoise's config dict for ``settings`` (by default from DATABASE_URL, and then the first
    connection logs its describe() line: ``announce``) and ``models`` (settings.MODELS)."""
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
        options = pool_options(settings, announce=announce)
        credentials = {"minsize": options.pop("min_size"), "maxsize": options.pop("max_size"),
                       **options}  # Tortoise's names for two of them
        if settings.replicas:  # reads go there (replicas.py)
            credentials["replicas"] = list(settings.replicas)
        connection = {"engine": "tortoise_neon.client", "credentials": credentials}
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": model_modules(project_models() if models is None else models),
                "default_connection": "default",
                "migrations": migrations,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def pool_options(settings: DatabaseSettings, *, policy: ConnectPolicy | None = None,
                 announce: bool = False) -> dict[str, Any]:
    """``asyncpg.create_pool``'s keyword arguments for one server."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "password": lambda: settings.password,  # Tortoise's debug log would print a string
        "database": settings.database,
        "ssl": ssl_option(settings),
        "server_settings": dict(settings.server_settings),
        "min_size": 0,  # no floor: an idle app lets Neon scale to zero (docs/app-on-neon.md)
        "max_size": settings.pool_size,
        "max_inactive_connection_lifetime": idle_timeout(settings),
        "connect": RetryingConnect(settings, policy=policy, announce=announce),
        "reset": skip_reset,
        "connection_class": PromptCloseConnection,
    }
    if settings.statement_cache_size is not None:
        options["statement_cache_size"] = settings.statement_cache_size
    return options


def idle_timeout(settings: DatabaseSettings) -> float:
    return POOLED_IDLE_TIMEOUT if settings.pooled else IDLE_TIMEOUT


async def skip_reset(connection: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing (asyncpg's default costs a round trip for session
    state Tortoise never creates: docs/connecting.md, "Pool reset")."""


class PromptCloseConnection(asyncpg.Connection):  # type: ignore[misc]
    """Closes by sending Terminate without waiting for the server to hang up (a round trip)."""

    async def close(self, *, timeout: float | None = None) -> None:
        try:
            await super().close(timeout=0.000_001)
        except (TimeoutError, asyncio.TimeoutError, OSError):
            pass
