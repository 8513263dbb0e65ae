"""main.py and transactions.py run as users run them, against the real test PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tortoise_neon.testing import servers
from tortoise_neon.testing.fixtures import (
    Postgres,
    error_line,
    query,
    run_script,
    script_env,
)

import pytest

from checks.template import ROOT, copy_project


def assert_clean(result) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Error" not in result.stderr


def test_main_twice_with_neon_console_url(pg: Postgres, dbname: str, db_url: str,
                                          tmp_path: Path) -> None:
    env = script_env(pg, db_url)
    first = run_script("main.py", env=env, cwd=tmp_path)
    assert_clean(first)
    tls = "TLS on, certificate verified" if pg.tls else "TLS off"
    assert f"/{dbname} as " in first.stdout and tls in first.stdout
    assert "Inserted user #1: Neon User" in first.stdout
    assert "1 user in total; newest 1:" in first.stdout

    second = run_script("main.py", "--name", "Ada Lovelace", env=env, cwd=tmp_path)
    assert_clean(second)
    assert "Inserted user #2: Ada Lovelace" in second.stdout
    assert "2 users in total; newest 2:" in second.stdout
    lines = second.stdout.splitlines()
    assert lines.index(next(x for x in lines if "#2 Ada" in x)) < lines.index(
        next(x for x in lines if "#1 Neon User" in x))  # newest first
    rows = query(pg, dbname, "SELECT id, name FROM demo_users ORDER BY id")
    assert [(r["id"], r["name"]) for r in rows] == [(1, "Neon User"), (2, "Ada Lovelace")]
    assert servers_password_absent(first.stdout + first.stderr + second.stdout + second.stderr)


def servers_password_absent(text: str) -> bool:
    from tortoise_neon.testing import servers

    return servers.APP_PASSWORD not in text and "s3cret" not in text


def test_main_lists_at_most_the_newest_ten(pg: Postgres, dbname: str, db_url: str,
                                           tmp_path: Path) -> None:
    env = script_env(pg, db_url)
    assert_clean(run_script("main.py", env=env, cwd=tmp_path))
    query(pg, dbname, "INSERT INTO demo_users (name, created_at) "
                      "SELECT 'user ' || g, now() FROM generate_series(1, 30) g")
    result = run_script("main.py", "--name", "Newest", env=env, cwd=tmp_path)
    assert_clean(result)
    assert "32 users in total; newest 10:" in result.stdout
    listed = [line for line in result.stdout.splitlines() if line.startswith("  #")]
    assert len(listed) == 10
    assert listed[0].startswith("  #32 Newest")


def test_transactions_on_a_fresh_database(pg: Postgres, dbname: str, db_url: str,
                                          tmp_path: Path) -> None:
    result = run_script("transactions.py", env=script_env(pg, db_url), cwd=tmp_path)
    assert_clean(result)
    assert "rolled back" in result.stdout and "committed" in result.stdout
    assert "Rows saved by this run: 0 for 'Alice (run " in result.stdout
    names = [r["name"] for r in query(pg, dbname, "SELECT name FROM demo_users")]
    assert len(names) == 1 and names[0].startswith("Bob (run ")
    # The counts are this run's: a second run reports its own rows, not the first run's.
    again = run_script("transactions.py", env=script_env(pg, db_url), cwd=tmp_path)
    assert_clean(again)
    assert ", 1 for 'Bob (run " in again.stdout
    assert len(query(pg, dbname, "SELECT name FROM demo_users")) == 2


def test_name_is_validated_before_anything_is_written(pg: Postgres, dbname: str, db_url: str,
                                                      tmp_path: Path) -> None:
    env = script_env(pg, db_url)
    for bad in ["", "   ", "x" * 51]:
        result = run_script("main.py", "--name", bad, env=env, cwd=tmp_path)
        assert result.returncode == 2
        assert "the name must be 1 to 50 characters" in result.stderr
        assert "Traceback" not in result.stderr
    assert query(pg, dbname, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_users'"
                 )[0][0] == 0
    ok = run_script("main.py", "--name", "x" * 50, env=env, cwd=tmp_path)
    assert_clean(ok)


def test_help(tmp_path: Path) -> None:
    result = run_script("main.py", "--help", env=script_env(None, None), cwd=tmp_path)
    assert result.returncode == 0 and "--name NAME" in result.stdout


def test_transactions_help_writes_nothing(pg: Postgres, dbname: str, db_url: str,
                                          tmp_path: Path) -> None:
    env = script_env(pg, db_url)
    result = run_script("transactions.py", "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: transactions.py [-h]")
    assert result.stderr == "" and "Connected" not in result.stdout
    wrong = run_script("transactions.py", "--name", "x", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "unrecognized arguments: --name x" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert query(pg, dbname, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_users'"
                 )[0][0] == 0  # nothing written
    assert not list(tmp_path.iterdir())


def test_sqlite_default_when_database_url_is_unset(tmp_path: Path) -> None:
    env = script_env(None, None)
    first = run_script("main.py", env=env, cwd=tmp_path)
    assert_clean(first)
    assert first.stdout.splitlines()[0].startswith(
        "DATABASE_URL is not set: using the local SQLite file quickstart.sqlite3.")
    assert ".env" in first.stdout.splitlines()[0]
    assert "1 user in total" in first.stdout
    tx = run_script("transactions.py", env=env, cwd=tmp_path)
    assert_clean(tx)
    assert "Rows saved by this run: 0 for 'Alice" in tx.stdout and ", 1 for 'Bob" in tx.stdout
    assert (tmp_path / "quickstart.sqlite3").exists()
    again = run_script("main.py", env=env, cwd=tmp_path)
    assert "3 users in total" in again.stdout


def test_env_file_beside_the_scripts_is_read(tmp_path: Path) -> None:
    """A user's .env, quoted as .env.example shows, is what the scripts use."""
    copy = tmp_path / "repo"
    copy.mkdir()
    copy_project(copy)
    (copy / ".env").write_text('DATABASE_URL="sqlite://from-dotenv.sqlite3"\n')
    result = run_script(str(copy / "main.py"), env=script_env(None, None), cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "Connected to SQLite file from-dotenv.sqlite3" in result.stdout
    assert (copy / "from-dotenv.sqlite3").exists()


def test_untouched_placeholder_is_refused(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    url = next(line.split("=", 1)[1] for line in example.splitlines()
               if line.startswith("DATABASE_URL="))
    result = run_script("main.py", env=script_env(None, url), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            "Error: DATABASE_URL still holds the placeholder from .env.example: paste the "
            "connection string from Neon's Connect dialog into .env"
        )
    ]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("script", ["main.py", "transactions.py"])
def test_a_wrong_password_is_the_demos_one_line(script: str, pg: Postgres, dbname: str,
                                               tmp_path: Path) -> None:
    url = pg.url(dbname, password="Wrong-Password-42")
    result = run_script(script, env=script_env(pg, url), cwd=tmp_path)
    line = error_line(result, password="Wrong-Password-42", written="Inserted")
    assert line.startswith(f"Error: Password authentication failed for user {servers.APP_USER}")
    assert query(pg, dbname, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_users'"
                 )[0][0] == 0  # nothing written
