"""The template's files, and copies of them where the checks run its scripts as a user does."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout: the template's files
PROJECT = ["main.py", "transactions.py", "settings.py", "app.py", "migrations", "pyproject.toml"]
SKIPPED = {".git", ".env", ".cache", ".venv", ".venv-ci", "venv", ".mypy_cache", ".ruff_cache",
           ".pytest_cache", "__pycache__"}


def copy_project(destination: Path, *, tests: bool = False) -> Path:
    """A copy of the project (scripts, settings, app, your model modules, migrations, config),
    or with ``tests`` the whole checkout as a user has it (``tests/``, the requirements, the
    library's folder), but no venv, caches or git. The scripts run there with the library as
    the venv has it installed."""
    destination.mkdir(parents=True, exist_ok=True)
    if tests:
        names = [path.name for path in ROOT.iterdir()
                 if path.name not in SKIPPED and not path.name.endswith(".sqlite3")]
    else:
        yours = [path.name for path in ROOT.glob("*.py") if path.name not in PROJECT]  # blog.py
        names = PROJECT + yours
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns(
                "__pycache__", ".pytest_cache", ".venv*", "build", "dist", "*.egg-info"))
        else:
            shutil.copy(source, destination / name)
    return destination
