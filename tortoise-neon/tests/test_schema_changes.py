"""The recipes of docs/schema-changes.md, followed on the library's project with rows in its
table: a required column, a table rename, a column shortened below its rows; then the next
generated migration still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tortoise_neon.testing.apps import start_uvicorn
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


def tortoise(project: Path, env: dict[str, str], *args: str, code: int = 0) -> str:
    """``python -m tortoise ARGS`` in ``project``: its output, or with ``code`` 1 its stderr."""
    result = subprocess.run([sys.executable, "-m", "tortoise", *args], cwd=project, env=env,
                            text=True, capture_output=True, timeout=120, check=False)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr if code else result.stdout


def app_startup_errors(project: Path, env: dict[str, str], log: Path) -> list[str]:
    """``uvicorn web:app`` in ``project``, which must stop at start-up: its ERROR lines."""
    server, _ = start_uvicorn(env, log, "web:app", cwd=project)
    try:
        assert server.wait(90) != 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
    assert "Traceback" not in log.read_text(), log.read_text()
    return [line for line in log.read_text().splitlines() if line.startswith("ERROR:")]


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
    # The line names both tables, the model's new one and the one with the rows, and the fix:
    # from a script (its migrate() at the start) and from an app's check_schema().
    line = ('The model Member\'s table is "people" (its Meta.table), but its rows are in '
            '"library_members", the table its migrations made: write the migration that renames '
            'it, tortoise_neon.rename_table("Member", "library_members", "people") '
            "(docs/schema-changes.md), then run `tortoise migrate`")
    before = run_script(str(project / "members.py"), env=env, cwd=tmp_path)
    assert before.returncode == 1 and before.stderr.splitlines() == [f"Error: {line}"], before.stderr
    assert app_startup_errors(project, env, tmp_path / "app.log")[0] == f"ERROR:    Error: {line}"

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
    # The migrations' state knows the new table, and nothing else changed: no stray migration.
    assert "No changes detected" in tortoise(project, env, "makemigrations")
    assert sorted(p.name for p in (project / "migrations").glob("0*.py")) == [
        "0001_initial.py", "0002_people.py"]

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


def test_a_column_shortened_below_its_rows_is_one_line_and_keeps_them(
        pg: Postgres, dbname: str, db_url: str, tmp_path: Path) -> None:
    """``max_length`` 50 -> 10 with "Grace Hopper" (12) in the table: `tortoise migrate` and a
    script stop with one line (table, column, why, the fix), roll back, and keep the rows; the
    fix the line names (a RunSQL UPDATE before the AlterField) then goes through."""
    project, env = library_project(tmp_path / "p"), script_env(pg, db_url)
    with_rows(pg, dbname)
    edit(project / "members.py", "name = fields.CharField(max_length=50)",
         "name = fields.CharField(max_length=10)")
    assert "Created models.0002" in tortoise(project, env, "makemigrations")
    [migration] = (project / "migrations").glob("0002_*.py")
    assert "ops.AlterField(" in migration.read_text()

    line = ('Error: Cannot change the column "name" of "library_members" from VARCHAR(50) to '
            "VARCHAR(10): rows it holds refuse the new type (value too long for type character "
            "varying(10)); the migration was rolled back and the rows are as they were. Shorten "
            "or convert those rows first, in a data migration: a RunSQL UPDATE before the "
            "AlterField (docs/schema-changes.md), then run `tortoise migrate` again")
    assert tortoise(project, env, "migrate", code=1).splitlines() == [line]
    script = run_script(str(project / "members.py"), env=env, cwd=tmp_path)
    assert script.returncode == 1 and script.stderr.splitlines() == [line], script.stderr

    def state() -> tuple[list[str], int, int]:
        names = [r["name"] for r in query(pg, dbname, f"SELECT name FROM {TABLE} ORDER BY id")]
        [length] = query(pg, dbname, "SELECT character_maximum_length FROM "
                                     "information_schema.columns WHERE table_name = $1 AND "
                                     "column_name = 'name'", TABLE)
        [applied] = query(pg, dbname, "SELECT count(*) FROM tortoise_migrations")
        return names, length[0], applied[0]

    assert state() == (["Ada", "Grace Hopper"], 50, 1)  # rolled back: rows, type, history

    # The fix the line names, in the generated migration, before its AlterField.
    edit(migration, "    operations = [\n",
         "    operations = [\n        ops.RunSQL(\"UPDATE library_members SET name = left(name, 10) "
         "WHERE length(name) > 10\", reverse_sql=ops.RunSQL.noop),\n")
    assert f"Applying models.{migration.stem}... OK" in tortoise(project, env, "migrate")
    assert state() == (["Ada", "Grace Hopp"], 10, 2)
    assert "No changes detected" in tortoise(project, env, "makemigrations")
