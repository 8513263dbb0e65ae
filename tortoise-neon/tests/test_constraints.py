"""Writes a constraint refuses, and the schema changes users make next: one line or a 409/422,
naming the table, the field or the constraint, never a traceback or a 500."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tortoise_neon.constraints import violation
from tortoise_neon.testing.fixtures import (
    Postgres,
    error_line,
    execute,
    migrate_database,
    query,
    run_script,
    script_env,
)

import asyncpg
import httpx
import pytest

from tests.project import library_project


def refused(field: str | None, msg: str, kind: str) -> dict[str, object]:
    """A 409/422 body as the library answers it: FastAPI's own 422 shape."""
    return {"detail": [{"loc": ["body", field] if field else ["body"], "msg": msg,
                        "type": kind}]}


def test_a_duplicate_is_a_409_naming_the_field(api: httpx.Client, pg: Postgres, dbname: str,
                                               tmp_path: Path) -> None:
    assert api.post("/members", json={"name": "Ada", "handle": "ada"}).status_code == 201
    again = api.post("/members", json={"name": "Ada again", "handle": "ada"})
    assert again.status_code == 409, again.text
    assert again.json() == refused("handle", "a row with the same value exists already",
                                   "unique")  # no constraint name unless the app asks
    too_long = api.post("/members", json={"name": "x" * 51})  # the model's max_length
    assert too_long.status_code == 422, too_long.text
    assert too_long.json() == refused("name", "the value is longer than 50 characters",
                                      "string_too_long")
    assert api.get("/members").status_code == 200  # the pool is fine afterwards
    assert [r["name"] for r in query(pg, dbname, "SELECT name FROM library_members")] == ["Ada"]
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log and " 500 Internal" not in log, log  # a status line, not a port
    assert log.count("A write was refused") == 1, log


def test_every_refusal_has_fastapis_422_shape(api: httpx.Client, pg: Postgres,
                                              dbname: str, tmp_path: Path) -> None:
    """FastAPI's own 422, the model's, a CHECK's, a NOT NULL's and a duplicate's 409, from the
    app on the real server: one shape, ``{"detail": [{"loc": [...], "msg", "type"}]}``, so a
    client parses them one way. FastAPI's items also carry ``input`` (the client's value);
    ours never do."""
    assert api.post("/members", json={"name": "Ada", "handle": "ada"}).status_code == 201
    execute(pg, dbname, """
        ALTER TABLE library_members ADD CHECK (name <> '');  -- library_members_name_check
        ALTER TABLE library_members ADD CONSTRAINT short_handle CHECK (length(handle) < 20);
    """)
    answers = {
        "fastapi": api.post("/members", json={"handle": "b"}),
        "model": api.post("/members", json={"name": "x" * 51}),
        "check": api.post("/members", json={"name": "", "handle": "secret-c"}),
        "named check": api.post("/members", json={"name": "D", "handle": "secret-" * 3}),
        "unique": api.post("/members", json={"name": "Ada again", "handle": "ada"}),
    }
    execute(pg, dbname, "ALTER TABLE library_members ALTER COLUMN handle SET NOT NULL")
    answers["not null"] = api.post("/members", json={"name": "Eve"})
    statuses = {what: answer.status_code for what, answer in answers.items()}
    assert statuses == {"fastapi": 422, "model": 422, "check": 422, "named check": 422,
                        "unique": 409, "not null": 422}, {w: a.text for w, a in answers.items()}
    bodies = {what: answer.json() for what, answer in answers.items()}
    assert bodies.pop("fastapi") == {"detail": [
        {"type": "missing", "loc": ["body", "name"], "msg": "Field required",
         "input": {"handle": "b"}}]}
    assert bodies == {
        "model": refused("name", "the value is longer than 50 characters", "string_too_long"),
        "check": refused("name", "a value breaks a check", "check"),
        "named check": refused(None, "a value breaks a check", "check"),  # no column known
        "unique": refused("handle", "a row with the same value exists already", "unique"),
        "not null": refused("handle", "a required value is missing", "missing"),
    }
    assert "secret" not in "".join(answer.text for answer in answers.values())
    # The same structure: the same top-level key, a list of items, each with FastAPI's keys
    # and types (loc a list beginning "body"); FastAPI's has "input" besides.
    [theirs] = answers["fastapi"].json()["detail"]
    for what, body in bodies.items():
        assert list(body) == ["detail"] and isinstance(body["detail"], list), what
        [ours] = body["detail"]
        assert set(ours) == set(theirs) - {"input"}, what
        assert {key: type(ours[key]) for key in ours} == {key: type(theirs[key]) for key in ours}
        assert ours["loc"][0] == theirs["loc"][0] == "body", what
        assert all(isinstance(part, str) for part in ours["loc"]), what
    assert [r["name"] for r in query(pg, dbname, "SELECT name FROM library_members")] == ["Ada"]
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log and " 500 " not in log and "secret" not in log, log
    assert ("A write was refused: a value breaks a check (table library_members, field name, "
            "constraint library_members_name_check)") in log, log


def test_a_duplicate_in_a_script_is_one_line(pg: Postgres, dbname: str, db_url: str,
                                            tmp_path: Path) -> None:
    env = script_env(pg, db_url)
    assert run_script("members.py", "--handle", "ada", env=env, cwd=tmp_path).returncode == 0
    line = error_line(run_script("members.py", "--handle", "ada", env=env, cwd=tmp_path))
    assert line == ("Error: A write was refused: a row with the same value exists already "
                    "(table library_members, field handle, constraint library_members_handle_key)")


def test_the_validation_line_keeps_the_field(pg: Postgres, db_url: str, tmp_path: Path) -> None:
    result = run_script("members.py", "--name", "x" * 51, env=script_env(pg, db_url), cwd=tmp_path)
    assert error_line(result).startswith("Error: ValidationError: name: Length of "), result.stderr


@pytest.mark.parametrize(("sql", "status", "field", "constraint"), [
    ("INSERT INTO kinds (code, parent, amount) VALUES ('a', NULL, 1)", 409, "code",
     "kinds_code_key"),
    ("INSERT INTO kinds (code, parent, amount) VALUES ('b', 42, 1)", 422, "parent",
     "kinds_parent_fkey"),
    ("INSERT INTO kinds (code, parent, amount) VALUES (NULL, NULL, 1)", 422, "code", None),
    ("INSERT INTO kinds (code, parent, amount) VALUES ('c', NULL, -1)", 422, None,
     "kinds_amount_check"),
])
def test_each_kind_of_constraint_on_a_real_server(pg: Postgres, dbname: str, sql: str,
                                                  status: int, field: str | None,
                                                  constraint: str | None) -> None:
    """Unique 23505, foreign key 23503, not null 23502, check 23514, as PostgreSQL sends them."""
    execute(pg, dbname, """
        CREATE TABLE kinds (id serial PRIMARY KEY, code text NOT NULL UNIQUE,
                            parent int REFERENCES kinds (id), amount int CHECK (amount > 0));
        INSERT INTO kinds (code, amount) VALUES ('a', 1);
    """)

    async def refused() -> BaseException:
        connection = await pg.admin(dbname)
        try:
            await connection.execute(sql)
        except asyncpg.PostgresError as exc:
            return exc
        finally:
            await connection.close()
        raise AssertionError("the write was not refused")

    broken = violation(asyncio.run(refused()))
    assert broken is not None
    assert (broken.status, broken.field, broken.constraint) == (status, field, constraint)
    assert broken.table == "kinds"


def test_a_required_column_on_a_table_with_rows_is_one_line(pg: Postgres, dbname: str,
                                                            db_url: str, tmp_path: Path) -> None:
    """The field added as users first write it: `tortoise migrate` says what to do instead of
    NotNullViolationError, and rolls back cleanly; the rows are still there."""
    project = library_project(tmp_path / "p")
    env = script_env(pg, db_url)
    migrate_database(pg, dbname)
    execute(pg, dbname, "INSERT INTO library_members (name, joined_at) VALUES ('Ada', now()), "
                        "('Grace', now())")
    model = project / "members.py"
    model.write_text(model.read_text().replace(
        "    joined_at = ", "    email = fields.CharField(max_length=100)\n    joined_at = "))
    tortoise = [sys.executable, "-m", "tortoise"]
    made = subprocess.run([*tortoise, "makemigrations"], cwd=project, env=env, text=True,
                          capture_output=True, timeout=120, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    migrated = subprocess.run([*tortoise, "migrate"], cwd=project, env=env, text=True,
                              capture_output=True, timeout=120, check=False)
    assert migrated.returncode == 1 and "Traceback" not in migrated.stderr, migrated.stderr
    assert migrated.stderr.splitlines() == [
        ('Error: Cannot add the required column "email" to "library_members": its rows have no '
         'value for it (column "email" of relation "library_members" contains null values). '
         "Give the field a default (default=...), or add it with null=True, fill it in, then "
         "make it required, or fill it in a data migration (docs/schema-changes.md)")]
    assert len(query(pg, dbname, "SELECT 1 FROM library_members")) == 2


def test_an_integrity_error_that_is_no_constraint_is_still_a_500() -> None:
    """A bug keeps its 500 (and its traceback, in the server's log)."""
    import tortoise_neon

    from fastapi import FastAPI
    from tortoise.exceptions import IntegrityError

    app = FastAPI()
    tortoise_neon.answer_database_errors(app)

    @app.post("/broken")
    async def broken() -> None:
        raise IntegrityError("not a constraint the database named")

    async def go() -> int:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.post("/broken")).status_code

    assert asyncio.run(go()) == 500
