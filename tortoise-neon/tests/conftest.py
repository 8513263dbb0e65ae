"""The library's suite: ``python -m pytest tortoise-neon/tests``. It runs the package against its own
project (tortoise-neon/tests/project/: the ``Member`` model, ``members.py``, ``ledger.py``,
``web:app``), so nothing in your checkout (main.py, transactions.py, app.py, settings.py, your
models, .env) can turn it red: the scripts, the CLI and the app run in a copy of that project
with the package beside it. In this process its model and migrations go by names of their own
(``tests.project.members``, ``tests.project.migrations``: Tortoise reloads a
migrations package by name, so a plain ``migrations`` could become yours), and ``settings`` is
the project's for each test, so nothing here is yours.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

from tortoise_neon.testing.apps import serving
from tortoise_neon.testing.fixtures import *  # the fixtures and hooks of both suites
from tortoise_neon.testing.fixtures import Postgres, use_project

import httpx
import pytest

from tests.project import library_project

MODELS = ["tests.project.members"]  # the project's model, by a name of its own
SETTINGS = types.ModuleType("settings")  # what the package reads as the project's settings.py
SETTINGS.MODELS = MODELS  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def the_library_projects_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``settings`` is the library project's for each test here, never yours (and only here:
    your tests may run in the same process)."""
    monkeypatch.setitem(sys.modules, "settings", SETTINGS)


@pytest.fixture(scope="package", autouse=True)
def the_library_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the library's project with the package beside it: where its scripts run."""
    path = library_project(tmp_path_factory.mktemp("library-project"))
    use_project(path, "web:app", models=MODELS, migrations="tests.project.migrations")
    yield path


@pytest.fixture
def api(pg: Postgres, db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """The project's app (``uvicorn web:app``) on this test's database, its tables made."""
    with serving(pg, db_url, tmp_path / "uvicorn.log") as client:
        yield client
