"""The template's own checks: ``python -m pytest template_checks``. They check the demo as it
ships (main.py, transactions.py, app.py, the User model, the README's path, the round-trip
budgets of both scripts). When you rewrite the demo, delete this folder: your tests (tests/) and
the library's (database/tests/) do not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from database.testing.fixtures import *  # the fixtures and hooks of both suites
from database.testing.fixtures import copy_project, use_project

import pytest


@pytest.fixture(scope="package", autouse=True)
def the_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the template's files (no .env), where its scripts run."""
    path = copy_project(tmp_path_factory.mktemp("template"))
    use_project(path, "app:app", models=["main"], migrations="migrations")
    yield path
