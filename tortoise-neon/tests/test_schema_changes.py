"""The recipes of docs/schema-changes.md, followed on the library's project with rows in its
table: a required column, a table rename; then the next generated migration still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tortoise_neon.testing.fixtures import (
    Postgres,
    execute,
    migrate_database,
    query,
    run_script,
    script_env,
)

from tests.project import library_project

TABLE = "library_members"


def tortoise(project: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tortoise", *args], cwd=project, env=env,
                            text=True, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def with_rows(pg: Postgres, dbname: str) -> None:
    migrate_database(pg, dbname)
    execute(pg, dbname, f"INSERT INTO {TABLE} (name, joined_at) VALUES ('Ada', now()), "
                        "('Grace Hopper', now())")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_a_required_column_added_nullable_filled_then_required(
        pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    project, env = library_project(tmp_path / "p"), script_env(pg, db_url)
    with_rows(pg, dbname)
    edit(project / "members.py", "    joined_at = ",
         "    email = fields.CharField(max_length=100)\n    joined_at = ")
    (project / "migrations" / "0002_email.py").write_text('''\
from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    operations = [
        ops.AddField(model_name="Member", name="email",
                     field=fields.CharField(max_length=100, null=True)),
        ops.RunSQL("UPDATE library_members SET email = 'm' || id || '@example.com' "
                   "WHERE email IS NULL", reverse_sql=ops.RunSQL.noop),
        ops.AlterField(model_name="Member", name="email", field=fields.CharField(max_length=100)),
    ]
''')
    assert "Applying models.0002_email... OK" in tortoise(project, env, "migrate")
    assert "No changes detected" in tortoise(project, env, "makemigrations")
    rows = query(pg, dbname, f"SELECT name, email FROM {TABLE} ORDER BY id")
    assert [(r["name"], r["email"]) for r in rows] == [
        ("Ada", "m1@example.com"), ("Grace Hopper", "m2@example.com")]
    nullable = query(pg, dbname, "SELECT is_nullable FROM information_schema.columns WHERE "
                                 "table_name = $1 AND column_name = 'email'", TABLE)
    assert nullable[0]["is_nullable"] == "NO"


def test_a_table_rename_keeps_the_rows_and_the_next_migration_works(
        pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    project, env = library_project(tmp_path / "p"), script_env(pg, db_url)
    with_rows(pg, dbname)
    edit(project / "members.py", 'TABLE = "library_members"', 'TABLE = "people"')
    assert "No changes detected" in tortoise(project, env, "makemigrations")  # Tortoise's blind spot
    before = run_script(str(project / "members.py"), env=env, cwd=tmp_path)
    assert before.returncode == 1
    assert 'relation "people" does not exist' in before.stderr
    assert "if you changed the model's Meta.table" in before.stderr  # the line leads on

    (project / "migrations" / "0002_people.py").write_text('''\
import tortoise_neon
from tortoise import migrations


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    operations = tortoise_neon.rename_table("Member", "library_members", "people")
''')
    assert "Applying models.0002_people... OK" in tortoise(project, env, "migrate")
    after = run_script(str(project / "members.py"), "--name", "Linus", env=env, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "3 members; newest: Linus, Grace Hopper, Ada" in after.stdout

    # The next change, generated: an AddField on the renamed table.
    edit(project / "members.py", "    joined_at = ",
         "    nickname = fields.CharField(max_length=30, null=True)\n    joined_at = ")
    assert "Created models.0003" in tortoise(project, env, "makemigrations")
    tortoise(project, env, "migrate")
    columns = query(pg, dbname, "SELECT column_name FROM information_schema.columns WHERE "
                                "table_name = 'people'")
    assert "nickname" in {c["column_name"] for c in columns}
    assert [r["name"] for r in query(pg, dbname, "SELECT name FROM people ORDER BY id")] == [
        "Ada", "Grace Hopper", "Linus"]


def test_a_backfill_in_python(pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    """The RunPython recipe: values computed per row, in the migration's transaction."""
    project, env = library_project(tmp_path / "p"), script_env(pg, db_url)
    with_rows(pg, dbname)
    edit(project / "members.py", "    joined_at = ",
         "    email = fields.CharField(max_length=100, null=True)\n    joined_at = ")
    tortoise(project, env, "makemigrations")
    previous = next((project / "migrations").glob("0002_*.py")).stem
    (project / "migrations" / "0003_fill_emails.py").write_text('''\
from tortoise import migrations
from tortoise.migrations import operations as ops


async def fill_emails(apps, schema_editor):
    rows = await schema_editor.client.execute_query_dict("SELECT id, name FROM library_members")
    for row in rows:
        await schema_editor.client.execute_query(
            "UPDATE library_members SET email = $1 WHERE id = $2",
            [f"{row['name'].lower().replace(' ', '.')}@example.com", row["id"]])


class Migration(migrations.Migration):
    dependencies = [("models", "PREVIOUS")]

    operations = [ops.RunPython(fill_emails, reverse_code=ops.RunPython.noop)]
'''.replace("PREVIOUS", previous))
    assert "Applying models.0003_fill_emails... OK" in tortoise(project, env, "migrate")
    rows = query(pg, dbname, f"SELECT email FROM {TABLE} ORDER BY id")
    assert [r["email"] for r in rows] == ["ada@example.com", "grace.hopper@example.com"]


def test_a_table_rename_to_a_name_with_double_quotes(pg: Postgres, dbname: str, db_url: str,
                                                    tmp_path: Path) -> None:
    """The names are quoted, whatever they hold: a ``"`` in one is part of the name, never the
    end of it (here, with SQL after it that must not run)."""
    project, env = library_project(tmp_path / "p"), script_env(pg, db_url)
    with_rows(pg, dbname)
    odd = 'members "old"; DROP TABLE tortoise_migrations; --'
    (project / "migrations" / "0002_odd.py").write_text(f'''\
import tortoise_neon
from tortoise import migrations


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    operations = tortoise_neon.rename_table("Member", "library_members", {odd!r})
''')
    assert "Applying models.0002_odd... OK" in tortoise(project, env, "migrate")
    tables = {r["tablename"] for r in query(pg, dbname, "SELECT tablename FROM pg_tables WHERE "
                                                        "schemaname = 'public'")}
    assert odd in tables and TABLE not in tables and "tortoise_migrations" in tables
    assert query(pg, dbname, "SELECT count(*) FROM " + '"' + odd.replace('"', '""') + '"'
                 )[0][0] == 2

    tortoise(project, env, "downgrade", "models", "0001_initial")  # the reverse rename
    tables = {r["tablename"] for r in query(pg, dbname, "SELECT tablename FROM pg_tables WHERE "
                                                        "schemaname = 'public'")}
    assert TABLE in tables and odd not in tables
