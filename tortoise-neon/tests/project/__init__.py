"""The library's own project: models, migrations, two scripts and a small app that exercise the
package the way a user's project does, so that the library's tests never depend on
main.py, transactions.py, app.py, settings.py or the User model of the checkout they live in.

The tests run ``python members.py``, ``python ledger.py``, ``uvicorn web:app`` and
``python -m tortoise migrate`` in a copy of this folder
(``library_project`` below), with the package installed. In the test process its modules go by their
package names (``tests.project.members``), never by names yours could have.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def library_project(destination: Path) -> Path:
    """A copy of this project in ``destination``, where its scripts run with the installed
    package: nothing there is the user's, and no .env is above it."""
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    shutil.copytree(HERE, destination, ignore=ignore, dirs_exist_ok=True)
    return destination
