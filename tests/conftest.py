"""Fixtures for your tests: each test gets a fresh PostgreSQL database, Tortoise initialised on
your MODELS (settings.py) with the migrations applied, and, if it asks, an HTTP client for the
app. Start from tests/test_users.py (a model) or tests/test_app.py (an endpoint).

The server is real, never SQLite: TEST_DATABASE_URL (a Neon branch) if set, else a throwaway
local PostgreSQL, started once per session (database/testing/databases.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import database
from database.testing import Target, fresh_database, seal, session_server

import httpx
import pytest
from tortoise import Tortoise

seal()  # no test reads .env, DATABASE_URL or DATABASE_URL_UNPOOLED: only TEST_DATABASE_URL


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"  # async tests (pytestmark = pytest.mark.anyio) run on asyncio


@pytest.fixture(scope="session")
def postgres() -> Iterator[Target]:
    with session_server() as server:
        yield server


@pytest.fixture
def database_url(postgres: Target) -> Iterator[str]:
    """The URL of a new, empty database for this test (dropped afterwards)."""
    with fresh_database(postgres) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[None]:
    """Tortoise on this test's database: your MODELS, the migrations applied, as the app has."""
    config = database.tortoise_config(database.parse_database_url(database_url))
    await Tortoise.init(config=config)
    try:
        await database.migrate(config["apps"])
        yield
    finally:
        await Tortoise.close_connections()


@pytest.fixture
async def client(db: None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app (app.py), on this test's database."""
    from app import app  # here, not at the top: a project without app.py keeps its other tests

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield client
