"""Growing the quickstart into an app, as the README says: a new model module, migrations,
both scripts and the FastAPI app on the migrated database, then a model change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.library.conftest import Postgres, copy_project, query, script_env
from tests.library.test_fastapi_app import start_uvicorn, wait_until_up

BLOG = '''\
from tortoise import fields
from tortoise.models import Model


class Post(Model):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=200)
    author = fields.ForeignKeyField("models.User", related_name="posts")
'''


def run(repo: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *command], cwd=repo, env=env, text=True,
                            capture_output=True, timeout=120, check=False)
    return result


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def columns(pg: Postgres, dbname: str, table: str) -> list[str]:
    return [r["column_name"] for r in query(
        pg, dbname, "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                    "ORDER BY ordinal_position", table)]


def test_add_a_model_migrate_and_serve(pg: Postgres, dbname: str, db_url: str,
                                       tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "myapp")
    (repo / "blog.py").write_text(BLOG)
    config = repo / "database" / "config.py"
    assert 'MODELS = ["main"]' in config.read_text()  # the one place the README names
    config.write_text(config.read_text().replace('MODELS = ["main"]', 'MODELS = ["main", "blog"]'))
    env = script_env(pg, db_url)

    made = ok(run(repo, env, "-m", "tortoise", "makemigrations"))
    assert "Created models.0001_initial" in made
    migration = (repo / "migrations" / "0001_initial.py").read_text()
    assert "'table': 'demo_users'" in migration and "name='Post'" in migration
    assert "Applying models.0001_initial... OK" in ok(run(repo, env, "-m", "tortoise", "migrate"))
    assert columns(pg, dbname, "post") == ["id", "title", "author_id"]

    assert "Rows saved by this run: 0 for 'Alice" in ok(run(repo, env, "transactions.py"))
    assert "Inserted user #3: Neon User" in ok(run(repo, env, "main.py"))

    log = tmp_path / "uvicorn.log"
    server, port = start_uvicorn(env, log, cwd=repo)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            wait_until_up(api, server, log)
            assert api.post("/users", json={"name": "Grace"}).status_code == 201
            assert [u["name"] for u in api.get("/users").json()][:2] == ["Grace", "Neon User"]
    finally:
        server.terminate()
        server.wait(15)

    # (#1 was Alice, rolled back: a sequence does not roll back.)
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
    assert "Created models.0002" in ok(run(repo, env, "-m", "tortoise", "makemigrations"))
    ok(run(repo, env, "-m", "tortoise", "migrate"))
    assert "email" in columns(pg, dbname, "demo_users")
    assert "Inserted user #5: With email" in ok(run(repo, env, "main.py", "--name", "With email"))
