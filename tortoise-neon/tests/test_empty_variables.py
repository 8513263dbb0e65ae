"""One rule for an empty or missing DATABASE_URL, DATABASE_URL_UNPOOLED and DATABASE_URL_REPLICA,
the same for a script (``python members.py``), the Tortoise CLI (``python -m tortoise migrate``)
and the app (``uvicorn web:app``), each run as a user runs it, with a ``.env`` beside it.

The rule (environment.py): empty, in the environment or in ``.env``, counts as not set; the
environment wins over ``.env`` when it has a value. An empty variable in the environment that
``.env`` fills is said in a warning; DATABASE_URL empty beside a set _UNPOOLED or _REPLICA is
refused with one line, on every path (never SQLite for the scripts and PostgreSQL for migrations).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tortoise_neon.testing.apps import start_uvicorn
from tortoise_neon.testing.fixtures import Postgres, child_env, query, run_script, script_env

from tests.project import library_project

REFUSED = ("Error: DATABASE_URL_UNPOOLED is set but DATABASE_URL is not (an empty value counts as "
           "not set): set DATABASE_URL to the primary's connection string (writes go there), or "
           "empty DATABASE_URL_UNPOOLED too for the local SQLite demo")


def tortoise_migrate(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tortoise", "migrate"], env=env, cwd=cwd,
                          text=True, capture_output=True, timeout=120, check=False)


def app_startup(env: dict[str, str], cwd: Path, log: Path) -> str:
    """``uvicorn web:app`` in ``cwd`` until it has started (then stopped) or failed: its log."""
    server, _ = start_uvicorn(env, log, cwd=cwd)
    try:
        for _ in range(600):
            text = log.read_text()
            if server.poll() is not None or "Application startup complete." in text:
                break
            __import__("time").sleep(0.1)
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(30)
    return log.read_text()


def no_tables(pg: Postgres, dbname: str) -> bool:
    return query(pg, dbname, "SELECT to_regclass('library_members') AS t")[0]["t"] is None


def test_an_empty_database_url_beside_the_unpooled_one_is_refused_everywhere(
        pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    """``DATABASE_URL=`` in .env beside DATABASE_URL_UNPOOLED: the scripts would use the SQLite
    file and ``tortoise migrate`` PostgreSQL. Every path refuses, with the same line."""
    library_project(tmp_path)
    (tmp_path / ".env").write_text(f'DATABASE_URL=\nDATABASE_URL_UNPOOLED="{db_url}"\n')
    env = script_env(pg, None)
    script = run_script("members.py", env=env, cwd=tmp_path)
    assert (script.returncode, script.stderr.splitlines()) == (1, [REFUSED]), script.stdout
    migrated = tortoise_migrate(env, tmp_path)
    assert (migrated.returncode, migrated.stderr.splitlines()) == (1, [REFUSED]), migrated.stdout
    assert migrated.stdout == ""
    log = app_startup(env, tmp_path, tmp_path / "uvicorn.log")
    assert f"ERROR:    {REFUSED}" in log.splitlines(), log
    assert "Traceback" not in log
    assert no_tables(pg, dbname)  # nothing went to the PostgreSQL of DATABASE_URL_UNPOOLED
    assert not (tmp_path / "quickstart.sqlite3").exists()  # nor to the SQLite file

    # Exported empty, the same (and an empty DATABASE_URL_UNPOOLED too: the SQLite demo).
    (tmp_path / ".env").write_text(f'DATABASE_URL_UNPOOLED="{db_url}"\n')
    script = run_script("members.py", env={**env, "DATABASE_URL": ""}, cwd=tmp_path)
    assert script.stderr.splitlines() == [REFUSED]
    (tmp_path / ".env").write_text("DATABASE_URL=\nDATABASE_URL_UNPOOLED=\n")
    for command in (["members.py"], ["-m", "tortoise", "migrate"]):
        ran = subprocess.run([sys.executable, *command], env=env, cwd=tmp_path, text=True,
                             capture_output=True, timeout=120, check=False)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("DATABASE_URL is not set: using the local SQLite file "
                                     "quickstart.sqlite3."), ran.stdout
    assert no_tables(pg, dbname)


def test_an_empty_replica_variable_beside_an_empty_database_url_is_refused(
        pg: Postgres, db_url: str, tmp_path: Path) -> None:
    library_project(tmp_path)
    (tmp_path / ".env").write_text(f"DATABASE_URL=''\nDATABASE_URL_REPLICA={db_url}\n")
    line = ("Error: DATABASE_URL_REPLICA is set but DATABASE_URL is not (an empty value counts as "
            "not set): set DATABASE_URL to the primary's connection string (writes go there), or "
            "empty DATABASE_URL_REPLICA too for the local SQLite demo")
    env = script_env(pg, None)
    assert run_script("members.py", env=env, cwd=tmp_path).stderr.splitlines() == [line]
    assert tortoise_migrate(env, tmp_path).stderr.splitlines() == [line]


def test_a_sqlite_database_url_beside_the_unpooled_string_is_refused(
        pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    """``DATABASE_URL=sqlite://...`` for a local run, the Neon direct string still beside it:
    migrations would go to Neon."""
    library_project(tmp_path)
    env = script_env(pg, "sqlite://local.sqlite3", DATABASE_URL_UNPOOLED=db_url)
    line = ("Error: DATABASE_URL is a SQLite file but DATABASE_URL_UNPOOLED is set: migrations or "
            "reads would go to PostgreSQL, the scripts and the app to the SQLite file; empty "
            "DATABASE_URL_UNPOOLED for SQLite, or set DATABASE_URL to the primary's string")
    assert tortoise_migrate(env, tmp_path).stderr.splitlines() == [line]
    assert run_script("members.py", env=env, cwd=tmp_path).stderr.splitlines() == [line]
    assert no_tables(pg, dbname)


def test_an_empty_exported_variable_is_filled_by_env_and_said(
        pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    """``export DATABASE_URL=`` left in a shell while .env holds the string: empty counts as
    not set, so .env's value is used, and a warning says so (the environment wins only with a
    value)."""
    library_project(tmp_path)
    (tmp_path / ".env").write_text(f"DATABASE_URL={db_url}\nDATABASE_URL_UNPOOLED={db_url}\n")
    env = script_env(pg, None, DATABASE_URL="", DATABASE_URL_UNPOOLED=" ")
    warning = (f"DATABASE_URL is empty in the environment: using the one in {tmp_path / '.env'} "
               "(an empty variable counts as not set; to leave it unset, empty or delete its "
               "line in .env)")
    migrated = tortoise_migrate(env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying models.0001_initial... OK" in migrated.stdout
    assert migrated.stderr.splitlines() == [
        warning, warning.replace("DATABASE_URL ", "DATABASE_URL_UNPOOLED ", 1)]
    script = run_script("members.py", "--name", "Filled", env=env, cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    assert "Connected to PostgreSQL at" in script.stdout
    assert warning in script.stderr.splitlines()
    assert [r["name"] for r in query(pg, dbname, "SELECT name FROM library_members")] == ["Filled"]
    log = app_startup(env, tmp_path, tmp_path / "uvicorn.log")
    assert "Application startup complete." in log, log
    assert f"WARNING:  {warning}" in log.splitlines(), log


def test_an_empty_exported_database_url_without_env_is_the_announced_sqlite_demo(
        tmp_path: Path) -> None:
    """Nothing anywhere but an empty DATABASE_URL: not set, so the SQLite demo, and its line
    says the variable is empty (a secret that did not resolve shows at once)."""
    library_project(tmp_path)
    env = child_env(DATABASE_URL="  ")
    result = run_script("members.py", "--name", "Local", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "DATABASE_URL is empty: using the local SQLite file quickstart.sqlite3. To use Neon, put "
        "your connection string in .env (see .env.example).")
    assert (tmp_path / "quickstart.sqlite3").exists()
    assert result.stderr == ""
