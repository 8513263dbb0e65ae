"""The library's suite: ``python -m pytest database/tests``. It runs the package against its own
project (database/tests/project/: the ``Member`` model, ``members.py``, ``ledger.py``,
``web:app``), so nothing in your checkout (main.py, transactions.py, app.py, settings.py, your
models, .env) can turn it red: the scripts, the CLI and the app run in a copy of that project
with the package beside it. In this process ``settings`` and ``members`` are imported from it
before any test runs, and its migrations are the package ``database.tests.project.migrations``
(Tortoise reloads a migrations package by name: a plain ``migrations`` could become yours), so
nothing here is yours.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from database.testing.apps import serving
from database.testing.fixtures import *  # the fixtures and hooks of both suites
from database.testing.fixtures import LIBRARY_PROJECT, Postgres, library_project, use_project

import httpx
import pytest

sys.path.insert(0, str(LIBRARY_PROJECT))
for name in ("settings", "members"):  # the project's, whatever sys.path says later
    sys.modules.pop(name, None)
    importlib.import_module(name)
sys.path.remove(str(LIBRARY_PROJECT))


@pytest.fixture(scope="package", autouse=True)
def the_library_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the library's project with the package beside it: where its scripts run."""
    path = library_project(tmp_path_factory.mktemp("library-project"))
    use_project(path, "web:app", models=["members"],
                migrations="database.tests.project.migrations")
    yield path


@pytest.fixture
def api(pg: Postgres, db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """The project's app (``uvicorn web:app``) on this test's database, its tables made."""
    with serving(pg, db_url, tmp_path / "uvicorn.log") as client:
        yield client
