"""app.py as it ships, served by uvicorn as the README runs it, against the test PostgreSQL:
its endpoints, its validation, its limits. (What the package gives every app is the library's
suite's: tortoise-neon/tests/test_web_app.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tortoise_neon.testing.apps import app_running, serving, startup_failure
from tortoise_neon.testing.fixtures import Postgres, query, script_env

import httpx
import pytest

from checks.template import copy_project

NAME_RULE = "the name must be 1 to 50 characters"


@pytest.fixture
def api(pg: Postgres, db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with serving(pg, db_url, tmp_path / "uvicorn.log") as client:
        yield client


def names(pg: Postgres, dbname: str) -> list[str]:
    return [r["name"] for r in query(pg, dbname, "SELECT name FROM demo_users ORDER BY id")]


def test_create_and_list_users_newest_first(api: httpx.Client, pg: Postgres, dbname: str) -> None:
    created = api.post("/users", json={"name": "Ada"})
    assert created.status_code == 201, created.text
    ada = created.json()
    assert ada["name"] == "Ada" and isinstance(ada["id"], int) and ada["created_at"]
    assert api.post("/users", json={"name": "  Grace  "}).json()["name"] == "Grace"

    listed = api.get("/users")
    assert listed.status_code == 200
    assert [u["name"] for u in listed.json()] == ["Grace", "Ada"]
    assert listed.json()[1] == ada
    assert [u["name"] for u in api.get("/users", params={"limit": 1}).json()] == ["Grace"]
    assert names(pg, dbname) == ["Ada", "Grace"]


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "   "}, {"name": "x" * 51}])
def test_invalid_names_are_rejected_with_a_clear_message(
    api: httpx.Client, pg: Postgres, dbname: str, body: dict[str, str]
) -> None:
    response = api.post("/users", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "name"] and NAME_RULE in error["msg"]
    assert api.post("/users", json={"name": "x" * 50}).status_code == 201  # the longest allowed
    assert names(pg, dbname) == ["x" * 50]


def test_list_is_bounded(api: httpx.Client) -> None:
    for i in range(12):
        assert api.post("/users", json={"name": f"User {i}"}).status_code == 201
    assert [u["name"] for u in api.get("/users").json()] == [f"User {i}" for i in range(11, 1, -1)]
    assert len(api.get("/users", params={"limit": 100}).json()) == 12
    for limit in (0, 101):
        response = api.get("/users", params={"limit": limit})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
            "query", "limit"]


def test_startup_without_the_tables_names_the_demos_table(pg: Postgres, db_url: str,
                                                         tmp_path: Path) -> None:
    errors = startup_failure(script_env(pg, db_url), tmp_path / "uvicorn.log")
    assert errors[0].startswith('ERROR:    Error: The database has no table for a model '
                                '(relation "demo_users" does not exist): run `tortoise')
    assert "(or, for the quickstart's own table, run `python main.py` once)" in errors[0]


def test_a_unique_name_answers_409_with_no_code_in_the_app(pg: Postgres, dbname: str,
                                                           db_url: str, tmp_path: Path) -> None:
    """`name` made unique, as users do, migrated: the same POST /users twice is 201 then 409
    naming the field, from the package (app.py unchanged), one log line, no traceback."""
    repo = copy_project(tmp_path / "myapp")
    main = repo / "main.py"
    main.write_text(main.read_text().replace("name = fields.CharField(max_length=50)",
                                             "name = fields.CharField(max_length=50, unique=True)"))
    env = script_env(pg, db_url)
    for command in ("makemigrations", "migrate"):
        done = subprocess.run([sys.executable, "-m", "tortoise", command], cwd=repo, env=env,
                              text=True, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path / "uvicorn.log"
    with app_running(env, log, "app:app", cwd=repo) as api:
        assert api.post("/users", json={"name": "Ada"}).status_code == 201
        again = api.post("/users", json={"name": "Ada"})
        assert again.status_code == 409, again.text
        assert again.json() == {"detail": [{  # FastAPI's 422 shape; no constraint name
            "loc": ["body", "name"], "msg": "a row with the same value exists already",
            "type": "unique"}]}
        # The same shape as app.py's own 422 (pydantic's): a client parses both one way.
        [theirs] = api.post("/users", json={"name": ""}).json()["detail"]
        [ours] = again.json()["detail"]
        assert set(ours) == {"loc", "msg", "type"} <= set(theirs)  # theirs adds "input", "ctx"
        assert theirs["loc"] == ours["loc"] == ["body", "name"]
        assert isinstance(theirs["msg"], str) and isinstance(theirs["type"], str)
    assert [r["name"] for r in query(pg, dbname, "SELECT name FROM demo_users")] == ["Ada"]
    text = log.read_text()
    assert "Traceback" not in text and text.count("A write was refused") == 1, text
