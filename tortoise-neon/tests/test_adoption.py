"""Adopting the library in a Tortoise + FastAPI app that already exists, as the README says.

tests/adoption/ holds a small app written as such apps are, before: the ``shop`` package
(``Product`` with a unique ``sku``; ``RegisterTortoise(app, db_url=..., modules=...,
generate_schemas=True)``) and its script ``shop_script.py``. The test copies it, applies the
```diff block of the README's "Adopting it in an app that already exists" to the copy (so the
README and this test cannot drift), checks that the diff changes at most 5 lines, and runs the
result, against whatever tortoise_neon is installed: the app under uvicorn on DATABASE_URL in
Neon's form, 409 for a duplicate sku, 503 when the server is down (stopped while the app runs),
and the script's one ``Error:`` line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import app_running
from tortoise_neon.testing.fixtures import (
    Postgres,
    error_line,
    query,
    run_script,
    script_env,
    unreached_url,
)

import pytest

BEFORE = Path(__file__).resolve().parent / "adoption"
README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Adopting it in an app that already exists"
APP = "shop.app:app"


@dataclass
class Hunk:
    old_start: int
    old_count: int
    new_count: int
    lines: list[str] = field(default_factory=list)  # " x", "-x", "+x"


def readme_diff() -> str:
    """The ```diff block of the README's adoption section."""
    text = README.read_text(encoding="utf-8")
    section = text.partition(SECTION)[2].partition("\n## ")[0]
    blocks = re.findall(r"```diff\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, f"{README}: one ```diff block expected under {SECTION!r}"
    return str(blocks[0])


def parse_diff(diff: str) -> dict[str, list[Hunk]]:
    """A unified diff (``--- a/PATH``, ``+++ b/PATH``, ``@@ -l,n +l,n @@``) by file. An empty
    line in a hunk is an empty context line (Markdown editors drop the trailing space)."""
    files: dict[str, list[Hunk]] = {}
    hunks: list[Hunk] | None = None
    lines = diff.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("--- "):
            assert lines[number + 1].startswith("+++ b/"), f"no +++ after {line!r}"
            path = lines[number + 1][len("+++ b/"):].strip()
            hunks = files.setdefault(path, [])
        elif line.startswith("+++ "):
            continue
        elif line.startswith("@@"):
            found = re.match(r"@@ -(\d+)(?:,(\d+))? \+\d+(?:,(\d+))? @@", line)
            assert found and hunks is not None, f"bad hunk header {line!r}"
            old, old_n, new_n = found.groups()
            hunks.append(Hunk(int(old), int(old_n or 1), int(new_n or 1)))
        else:
            assert hunks, f"a line outside any hunk: {line!r}"
            hunks[-1].lines.append(line if line else " ")
    return files


def apply_hunks(before: list[str], hunks: list[Hunk], path: str) -> list[str]:
    """``before`` (lines) with the hunks applied, each exactly where its header says."""
    after: list[str] = []
    at = 0  # the next line of ``before`` to copy
    for hunk in hunks:
        start = hunk.old_start - 1
        assert start >= at, f"{path}: hunks out of order"
        after += before[at:start]
        old = [line[1:] for line in hunk.lines if line[0] in " -"]
        new = [line[1:] for line in hunk.lines if line[0] in " +"]
        assert all(line[0] in " -+" for line in hunk.lines), f"{path}: {hunk.lines}"
        assert (len(old), len(new)) == (hunk.old_count, hunk.new_count), \
            f"{path}: the counts of hunk @@ -{hunk.old_start} do not match its lines"
        assert before[start:start + len(old)] == old, \
            f"{path}: the README's diff does not apply at line {hunk.old_start}: the app in " \
            f"tests/adoption/ and the README disagree"
        after += new
        at = start + len(old)
    return after + before[at:]


def changed_lines(files: dict[str, list[Hunk]]) -> int:
    """Lines the diff changes: a line replaced counts once, a line added or removed once."""
    total = 0
    for hunks in files.values():
        for hunk in hunks:
            removed = added = 0
            for line in [*hunk.lines, " "]:
                if line[0] == "-":
                    removed += 1
                elif line[0] == "+":
                    added += 1
                else:
                    total += max(removed, added)
                    removed = added = 0
    return total


def adopt(destination: Path) -> Path:
    """A copy of the app in tests/adoption/ with the README's diff applied: the app AFTER."""
    shutil.copytree(BEFORE, destination, ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)
    for path, hunks in parse_diff(readme_diff()).items():
        file = destination / path
        assert file.is_file(), f"the README's diff changes {path}, which the app does not have"
        lines = file.read_text(encoding="utf-8").splitlines()
        file.write_text("\n".join(apply_hunks(lines, hunks, path)) + "\n", encoding="utf-8")
    return destination


@pytest.fixture(scope="module")
def after(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adopt(tmp_path_factory.mktemp("adopted"))


def test_the_readme_diff_changes_at_most_five_lines(after: Path) -> None:
    files = parse_diff(readme_diff())
    assert set(files) == {"shop/app.py", "shop_script.py"}, set(files)
    assert changed_lines(files) <= 5, readme_diff()
    app = (after / "shop" / "app.py").read_text()
    script = (after / "shop_script.py").read_text()
    assert "tortoise_neon.tortoise_config(" in app  # the config from DATABASE_URL
    assert "tortoise_neon.answer_database_errors(app)" in app  # 503/409
    assert "generate_schemas=True" in app  # the app keeps its own way of making tables
    assert "tortoise_neon.run(main())" in script  # the script runner
    assert "tortoise_neon" not in (BEFORE / "shop" / "app.py").read_text()  # BEFORE: plain


def test_the_adopted_app_on_neons_url_answers_409_for_a_duplicate(
        after: Path, pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    assert db_url.startswith("postgresql://") and "sslmode=require" in db_url  # Neon's form
    env = script_env(pg, db_url)
    with app_running(env, tmp_path / "uvicorn.log", app=APP, cwd=after) as api:
        created = api.post("/products", json={"sku": "TEA-1", "name": "Green tea"})
        assert created.status_code == 201, created.text
        again = api.post("/products", json={"sku": "TEA-1", "name": "Black tea"})
        assert again.status_code == 409, again.text  # plain Tortoise: a 500
        assert "sku" in again.text
        # the script, on the same DATABASE_URL, through the app's set-up
        added = run_script(str(after / "shop_script.py"), "TEA-2", "Oolong", env=env, cwd=after)
        assert added.returncode == 0 and "Added product TEA-2" in added.stdout, added.stderr
        assert [p["sku"] for p in api.get("/products").json()] == ["TEA-1", "TEA-2"]
        # the same duplicate from the script: one line, no traceback
        twice = run_script(str(after / "shop_script.py"), "TEA-2", "Oolong", env=env, cwd=after)
        assert "field sku" in error_line(without_connected(twice), written="Added product")
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log and servers.APP_PASSWORD not in log, log
    assert query(pg, dbname, "SELECT count(*) FROM shop_products")[0][0] == 2


def without_connected(result):  # type: ignore[no-untyped-def]
    """The script's output without the line the library logs when the app's config first
    connects (``Connected to PostgreSQL at ...``, on stderr: it is a log line)."""
    kept = [line for line in result.stderr.splitlines() if not line.startswith("Connected to ")]
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout,
                                       "".join(f"{line}\n" for line in kept))


def test_the_adopted_app_answers_503_when_the_database_is_unreachable(
        after: Path, pg: Postgres, local_pg: servers.PostgresServer, db_url: str,
        tmp_path: Path) -> None:
    """The server goes away while the app runs (a compute that cannot be reached): what the
    app cannot serve is a 503 with Retry-After, not a 500, and the app itself stays up."""
    log = tmp_path / "uvicorn.log"
    with app_running(script_env(pg, db_url), log, app=APP, cwd=after) as api:
        assert api.post("/products", json={"sku": "A", "name": "a"}).status_code == 201
        local_pg.stop()  # nothing listens on DATABASE_URL's port any more
        try:
            down = api.get("/products")
            assert down.status_code == 503, down.text
            assert down.headers["Retry-After"] == "2"
            write = api.post("/products", json={"sku": "B", "name": "b"})
            assert write.status_code == 503, write.text
            assert api.get("/health").json() == {"status": "ok"}  # the app itself is up
        finally:
            local_pg.start()
    output = log.read_text()
    assert "ERROR:    Error: " in output and "Traceback" not in output, output


def test_the_adopted_script_says_one_line_for_a_bad_database_url(
        after: Path, pg: Postgres, dbname: str) -> None:
    script = str(after / "shop_script.py")
    malformed = run_script(script, "X-1", "x", env=script_env(pg, "postgresql://oops"),
                           cwd=after)
    assert "DATABASE_URL" in error_line(malformed, written="Added product")
    wrong = pg.url(dbname, password="Wrong-Password-42")
    refused = run_script(script, "X-1", "x", env=script_env(pg, wrong), cwd=after)
    line = error_line(refused, password="Wrong-Password-42", written="Added product")
    assert "assword" in line, line
    nobody = unreached_url(dbname, port=servers.free_port(), connect_timeout="2")
    unreached = run_script(script, "X-1", "x", env=script_env(pg, nobody), cwd=after)
    error_line(unreached, written="Added product")
