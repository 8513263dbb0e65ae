"""The template's own checks: ``python -m pytest .ci/checks``. They check the demo as it
ships (main.py, transactions.py, app.py, the User model, the README's path, the round-trip
budgets of both scripts). When you rewrite the demo, delete this folder: your tests (tests/) and
the library's (tortoise-neon/tests/) do not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tortoise_neon.testing.fixtures import *  # the fixtures and hooks of both suites
from tortoise_neon.testing.fixtures import use_project

import pytest

from checks.template import copy_project


@pytest.fixture(scope="package", autouse=True)
def the_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the template's files (no .env), where its scripts run."""
    path = copy_project(tmp_path_factory.mktemp("template"))
    use_project(path, "app:app", models=["main"], migrations="migrations")
    yield path
