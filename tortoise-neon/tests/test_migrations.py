"""Tortoise's built-in migrations on the library's project, run from its root as the README shows.

`python -m tortoise` is the `tortoise` command: it finds `tortoise_neon.TORTOISE_ORM` through
pyproject.toml's [tool.tortoise] and the database through DATABASE_URL, with no flags.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tortoise_neon.testing.fixtures import (
    Postgres,
    query,
    run_script,
    script_env,
    start_script,
)

from tests.project import library_project


def tortoise(*args: str, env: dict[str, str], cwd: Path,
             expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "tortoise", *args], env=env, cwd=cwd,
                            text=True, capture_output=True, timeout=120, check=False)
    assert result.returncode == expect, f"tortoise {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def on_disk(repo: Path) -> list[str]:
    """The migrations of the project (the shipped 0001_initial, and any you added)."""
    return sorted(path.stem for path in (repo / "migrations").glob("[0-9]*.py"))


def applied(pg: Postgres, dbname: str) -> list[str]:
    rows = query(pg, dbname, "SELECT app, name FROM tortoise_migrations")
    assert {r["app"] for r in rows} == {"models"}
    return sorted(r["name"] for r in rows)


def test_the_projects_migration_matches_the_model_and_creates_its_table(
    pg: Postgres, dbname: str, db_url: str, tmp_path: Path
) -> None:
    library_project(tmp_path)  # a copy: makemigrations would write migrations/ there
    env = script_env(pg, db_url)

    # migrations/0001_initial.py is Member as members.py defines it: nothing to make.
    assert "No changes detected" in tortoise("makemigrations", env=env, cwd=tmp_path).stdout
    assert query(pg, dbname, "SELECT to_regclass('library_members') AS t")[0]["t"] is None

    migrated = tortoise("migrate", env=env, cwd=tmp_path)
    assert "Applying models.0001_initial... OK" in migrated.stdout
    columns = query(pg, dbname, "SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'library_members' ORDER BY ordinal_position")
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("id", "integer"), ("name", "character varying"), ("handle", "character varying"),
        ("joined_at", "timestamp with time zone")]
    assert applied(pg, dbname) == on_disk(tmp_path)
    assert "No migrations to apply" in tortoise("migrate", env=env, cwd=tmp_path).stdout

    # The script works on the migrated table, and finds nothing to apply.
    result = run_script("members.py", "--name", "Migrated", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Added member #1: Migrated" in result.stdout
    rows = query(pg, dbname, "SELECT name FROM library_members")
    assert [r["name"] for r in rows] == ["Migrated"]
    assert applied(pg, dbname) == on_disk(tmp_path)


def test_a_script_applies_the_migrations_the_cli_then_finds_applied(
    pg: Postgres, dbname: str, db_url: str, tmp_path: Path
) -> None:
    """The README's order: the script first, then `tortoise migrate` has nothing to do."""
    library_project(tmp_path)
    env = script_env(pg, db_url)
    result = run_script("members.py", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert applied(pg, dbname) == on_disk(tmp_path)
    assert "No migrations to apply" in tortoise("migrate", env=env, cwd=tmp_path).stdout


def test_scripts_starting_at_once_apply_the_migrations_once(
    pg: Postgres, dbname: str, db_url: str, tmp_path: Path
) -> None:
    """Several processes on a fresh database: the advisory lock lets one apply 0001_initial."""
    library_project(tmp_path)
    env = script_env(pg, db_url)
    scripts = [start_script("members.py", "--name", f"P{i}", env=env, cwd=tmp_path)
               for i in range(4)]
    outcomes = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in scripts]
    for script in scripts:
        for stream in (script.stdout, script.stderr):
            if stream:
                stream.close()
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert applied(pg, dbname) == on_disk(tmp_path)
    assert len(query(pg, dbname, "SELECT 1 FROM library_members")) == 4


def test_migrate_with_a_wrong_password_is_one_line(pg: Postgres, dbname: str,
                                                   tmp_path: Path) -> None:
    library_project(tmp_path)
    url = pg.url(dbname, password="Wrong-Password-42")
    result = tortoise("migrate", env=script_env(pg, url), cwd=tmp_path, expect=1)
    assert "Traceback" not in result.stderr and "Wrong-Password-42" not in result.stderr
    assert result.stdout == ""  # no plan ("APPLY ..., Plan: 1 to apply") before the line
    parts = urlsplit(url)
    assert result.stderr.splitlines() == [(
        f"Error: Password authentication failed for user {parts.username} at {parts.hostname}: "
        "copy the connection string again from Neon's Connect dialog (or reset the role's "
        "password)")]


def test_the_cli_uses_the_unpooled_string_and_the_scripts_do_not(
    pg: Postgres, dbname: str, db_url: str, tmp_path: Path
) -> None:
    """Neon's two strings: `tortoise migrate` on DATABASE_URL_UNPOOLED, a script on DATABASE_URL
    (here one that names another database, so each run shows which string it used)."""
    library_project(tmp_path)
    elsewhere = pg.url("qs_not_this_one")
    env = script_env(pg, elsewhere, DATABASE_URL_UNPOOLED=db_url)
    migrated = tortoise("migrate", env=env, cwd=tmp_path).stdout
    assert "Applying models.0001_initial... OK" in migrated
    assert applied(pg, dbname) == on_disk(tmp_path)
    result = run_script("members.py", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Database qs_not_this_one does not exist" in result.stderr
    assert "in DATABASE_URL (" in result.stderr

    # A mistake in the direct string: the line names that variable.
    env = script_env(pg, db_url, DATABASE_URL_UNPOOLED=pg.url("qs_nor_this_one"))
    failed = tortoise("migrate", env=env, cwd=tmp_path, expect=1)
    host = urlsplit(db_url).hostname
    assert failed.stderr.splitlines() == [
        (f"Error: Database qs_nor_this_one does not exist at {host}: fix the name after the host "
         "in DATABASE_URL_UNPOOLED (Neon's default is neondb)")]
