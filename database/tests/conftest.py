"""The library's suite: ``python -m pytest database/tests``. It runs the package against its own
project (database/tests/project/: the ``Member`` model, ``members.py``, ``ledger.py``,
``web:app``), copied with the package into a temporary folder, so nothing in your checkout
(main.py, transactions.py, app.py, settings.py, your models, .env) can turn it red.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from database.testing.fixtures import *
from database.testing.fixtures import library_project, use_project

import pytest

APP = "web:app"  # the library project's app, as `uvicorn web:app` runs it
TABLE = "library_members"  # its one table


@pytest.fixture(scope="session", autouse=True)
def the_library_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = library_project(tmp_path_factory.mktemp("library-project"))
    use_project(path, models=["database.tests.project.members"],
                migrations="database.tests.project.migrations")
    yield path
