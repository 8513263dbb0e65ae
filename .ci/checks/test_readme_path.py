"""The README's path on one database, top to bottom, in a copy of the repository: `python
main.py`, "Adding a model" (its blog.py, its MODELS line), "Migrations", the scripts and the app
on the grown schema, "Tests" (its test_posts.py), and the copy's own tests, green; then
`ruff check .` and `mypy` on the grown copy, clean.
Then a model change without a migration: one line, and the fix the line names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tortoise_neon.testing.apps import app_running
from tortoise_neon.testing.fixtures import Postgres, query, script_env

from checks.template import ROOT, copy_project

README = (ROOT / "README.md").read_text()


def readme_block(section: str, language: str = "python") -> str:
    """The first ``language`` code block of the README's ``## section``."""
    text = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert match, f"no {language} block in {section}"
    return match.group(1)


def run(repo: Path, env: dict[str, str], *command: str,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *command], cwd=repo, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def columns(pg: Postgres, dbname: str, table: str) -> list[str]:
    return [r["column_name"] for r in query(
        pg, dbname, "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                    "ORDER BY ordinal_position", table)]


def test_the_readme_path_on_one_database(pg: Postgres, dbname: str, db_url: str,
                                         tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "myapp", tests=True)
    env = script_env(pg, db_url)

    # Two commands: the demo on the database.
    assert "Inserted user #1: Neon User" in ok(run(repo, env, "main.py"))

    # Adding a model, as the README words it.
    (repo / "blog.py").write_text(readme_block("Adding a model"))
    assert 'MODELS = ["main", "blog"]' in README.split("## Adding a model", 1)[1]
    settings = repo / "settings.py"
    assert settings.read_text().count('MODELS = ["main"]') == 1
    settings.write_text(settings.read_text().replace('MODELS = ["main"]',
                                                     'MODELS = ["main", "blog"]'))

    # Migrations, on the database main.py set up: no DuplicateTableError, no --fake.
    made = ok(run(repo, env, "-m", "tortoise", "makemigrations"))
    assert "Created models.0002_auto_" in made, made
    [migration] = (repo / "migrations").glob("0002_auto_*.py")
    assert "name='Post'" in migration.read_text() and "demo_users" not in migration.read_text()
    migrated = ok(run(repo, env, "-m", "tortoise", "migrate"))
    assert f"Applying models.{migration.stem}... OK" in migrated, migrated
    assert "0001_initial" not in migrated  # main.py applied it, and the CLI knows
    assert columns(pg, dbname, "post") == ["id", "title", "author_id"]

    assert "Rows saved by this run: 0 for 'Alice" in ok(run(repo, env, "transactions.py"))
    assert "Inserted user #4: Neon User" in ok(run(repo, env, "main.py"))  # (#2 rolled back)

    # The app, on the grown schema.
    log = tmp_path / "uvicorn.log"
    with app_running(env, log, "app:app", cwd=repo) as api:
        assert api.post("/users", json={"name": "Grace"}).status_code == 201
        assert [u["name"] for u in api.get("/users").json()][:2] == ["Grace", "Neon User"]

    # Tests: the README's test for Post, then the copy's own tests (`python -m pytest`), green.
    # The library's suite is not run again here: CI runs it once, on the installed wheel.
    (repo / "tests" / "test_posts.py").write_text(readme_block("Tests"))
    yours = sorted(str(test.relative_to(repo)) for test in (repo / "tests").glob("test_*.py"))
    assert "tests/test_posts.py" in yours and "tests/test_users.py" in yours, yours
    tested = ok(run(repo, env, "-m", "pytest", "-q", "-p", "no:cacheprovider", timeout=600))
    assert re.search(r"^\d+ passed", tested.splitlines()[-1]), tested
    assert "skipped" not in tested.splitlines()[-1] and "failed" not in tested, tested
    assert "test_posts.py" in ok(run(repo, env, "-m", "pytest", "--co", "-q"))  # yours ran

    # The two commands the README names, as CI runs them, on the grown copy: its examples pass.
    tools = Path(sys.executable).parent
    assert "`ruff check .` and `mypy`" in README
    for tool in (["ruff", "check", "."], ["mypy"]):
        checked = subprocess.run([str(tools / tool[0]), *tool[1:]], cwd=repo, env=env, text=True,
                                 capture_output=True, timeout=300, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "blog.py" not in checked.stdout and "test_posts" not in checked.stdout

    # A model change without a migration: one line naming the fix, nothing written.
    main = repo / "main.py"
    main.write_text(main.read_text().replace(
        "    name = fields.CharField(max_length=50)\n",
        "    name = fields.CharField(max_length=50)\n"
        "    email = fields.CharField(max_length=100, null=True)\n"))
    behind = run(repo, env, "main.py", "--name", "With email")
    assert behind.returncode == 1 and "Traceback" not in behind.stderr, behind.stderr
    assert behind.stderr.splitlines() == [
        ('Error: The database schema is behind the models (column "email" of relation '
         '"demo_users" does not exist): run `tortoise makemigrations` then `tortoise migrate`')]
    assert "Created models.0003" in ok(run(repo, env, "-m", "tortoise", "makemigrations"))
    ok(run(repo, env, "-m", "tortoise", "migrate"))
    assert "email" in columns(pg, dbname, "demo_users")
    assert re.search(r"Inserted user #\d+: With email", ok(run(repo, env, "main.py", "--name",
                                                              "With email")))
