"""pip's files and pyproject.toml (uv's) say the same thing: the same pins, no more, no fewer.

requirements.txt is ``[project] dependencies``; requirements-dev.txt is requirements.txt plus
``[dependency-groups] dev``. uv.lock follows pyproject.toml (``uv lock --check`` in .ci/run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
Pins = dict[str, str]


def local_name(path: str) -> str:
    """The name of the package in a folder of the checkout (``./tortoise-neon``)."""
    return str(tomllib.loads((ROOT / path / "pyproject.toml").read_text())["project"]["name"])


def pins(lines: list[str], sources: dict[str, Any] | None = None) -> Pins:
    """Each requirement by its normalised name: the requirement in a normalised form. A folder
    (pip's ``./tortoise-neon``, or uv's ``[tool.uv.sources]`` path) is ``name @ folder``."""
    found: Pins = {}
    for line in lines:
        if line.startswith(("./", "../")):
            path = line.rstrip("/").removeprefix("./")
            name = canonicalize_name(local_name(path))
            assert name not in found, f"{name} is listed twice"
            found[name] = f"{name} @ {path}"
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in found, f"{name} is listed twice"
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        marker = f"; {requirement.marker}" if requirement.marker else ""
        found[name] = f"{name}{extras}{requirement.specifier}{marker}"
        source = (sources or {}).get(requirement.name, {})
        if "path" in source:
            found[name] = f"{name} @ {source['path'].rstrip('/')}"
    return found


def read_requirements(name: str) -> tuple[Pins, list[str]]:
    """The pins of a requirements file, and the files it includes with ``-r``."""
    lines, included = [], []
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if line.startswith("#") or not line:
            continue
        if line.startswith("-r "):
            included.append(line[3:].strip())
        else:
            lines.append(line)
    return pins(lines), included


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_runtime_pins_match(pyproject: dict[str, Any]) -> None:
    runtime, included = read_requirements("requirements.txt")
    assert included == []
    sources = pyproject.get("tool", {}).get("uv", {}).get("sources", {})
    assert pins(pyproject["project"]["dependencies"], sources) == runtime


def test_dev_pins_match(pyproject: dict[str, Any]) -> None:
    dev, included = read_requirements("requirements-dev.txt")
    assert included == ["requirements.txt"]
    assert pins(pyproject["dependency-groups"]["dev"]) == dev


def test_every_pin_is_exact() -> None:
    """Both files pin exact versions, as uv.lock does (a range would let them drift), or name a
    folder of the checkout (the library, until it is released)."""
    for name in ("requirements.txt", "requirements-dev.txt"):
        for requirement in read_requirements(name)[0].values():
            assert "==" in requirement or " @ " in requirement, \
                f"{name}: {requirement} is not pinned with =="


def test_a_disagreement_is_seen(pyproject: dict[str, Any]) -> None:
    """The comparison notices another version, a missing extra and a missing package."""
    runtime, _ = read_requirements("requirements.txt")
    declared = list(pyproject["project"]["dependencies"])
    sources = pyproject.get("tool", {}).get("uv", {}).get("sources", {})
    assert pins(declared, sources) == runtime
    assert pins([d.replace("==", "==0.0.") for d in declared], sources) != runtime
    assert pins([d.replace("[asyncpg]", "") for d in declared], sources) != runtime
    assert pins(declared[1:], sources) != runtime
