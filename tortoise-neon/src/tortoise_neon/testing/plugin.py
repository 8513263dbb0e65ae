"""The pytest plugin (entry point ``pytest11``, name ``tortoise_neon``): fixtures for your tests.

- ``postgres``      the session's server: TEST_DATABASE_URL (a Neon branch, or any PostgreSQL whose
                    user may create databases) if set, else a throwaway local PostgreSQL with TLS
                    and SCRAM, started once per session (``databases.py``)
- ``database_url``  a new, empty database on it for one test, dropped afterwards
- ``db``            Tortoise on that database: your ``MODELS`` (settings.py), your migrations
                    applied, as the app has them
- ``client``        an ``httpx.AsyncClient`` for your ASGI app, in-process, on that database; the
                    app is ``app:app`` unless ``tortoise_neon_app`` in pytest's settings says
                    otherwise (``tortoise_neon_app = "myproject.web:app"``)
- ``anyio_backend`` asyncio, for async tests (``pytestmark = pytest.mark.anyio``)

Sealed: as soon as pytest loads the plugin, no test reads ``.env``, DATABASE_URL or its kin
(``sealed.py``): only TEST_DATABASE_URL points the tests at an outside server. ``-p
no:tortoise_neon`` turns the plugin off.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tortoise_neon.testing.sealed import seal

import pytest

seal()  # before any test module, or your conftest.py, is imported

APP_OPTION = "tortoise_neon_app"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(APP_OPTION, "the ASGI app the client fixture calls (module:attribute)",
                  default="app:app")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """TEST_DATABASE_URL, or a throwaway local server for this session (removed at the end)."""
    from tortoise_neon.testing.databases import session_server

    with session_server() as server:
        yield server


@pytest.fixture
def database_url(postgres: Any) -> Iterator[str]:
    """The URL of a new, empty database for this test (dropped afterwards)."""
    from tortoise_neon.testing.databases import fresh_database

    with fresh_database(postgres) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[None]:
    """Tortoise on this test's database: your MODELS, the migrations applied, as the app has."""
    import tortoise_neon

    from tortoise import Tortoise

    config = tortoise_neon.tortoise_config(tortoise_neon.parse_database_url(database_url))
    await Tortoise.init(config=config)
    try:
        await tortoise_neon.migrate(config["apps"])
        yield
    finally:
        await Tortoise.close_connections()


@pytest.fixture
async def client(db: None, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An HTTP client for your app (``app:app``, or ``tortoise_neon_app``), on this test's
    database."""
    import httpx

    module, _, attribute = str(request.config.getini(APP_OPTION)).partition(":")
    app = getattr(importlib.import_module(module), attribute or "app")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as http:
        yield http
