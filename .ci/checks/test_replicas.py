"""The demo as it ships, unchanged, grown past one process and one compute.

With DATABASE_URL_REPLICA pointing at a real hot standby of the test server that replays 2 s
behind it: main.py, transactions.py and app.py read their own writes; clients that wrote nothing
read from the replica; with the standby stopped, every GET is 200. On a server with 7 slots for
the app's role: ``uvicorn app:app --workers 3`` under 24 clients fails no request, and main.py
with every slot taken says the cause and the fix."""

from __future__ import annotations

from pathlib import Path

from tortoise_neon import read_your_writes
from tortoise_neon.testing import servers
from tortoise_neon.testing.apps import (
    app_database,
    app_running,
    create_tables,
    every_slot_taken,
    three_workers_on_seven_slots,
)
from tortoise_neon.testing.fixtures import (
    Postgres,
    error_line,
    execute,
    replayed,
    run_script,
    script_env,
)

import httpx


def test_main_and_transactions_read_their_own_writes(
        pg: Postgres, dbname: str, db_url: str, replica_url: str, tmp_path: Path) -> None:
    env = script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url)
    for count in (1, 2, 3):  # each run's row reaches the standby 2 s after it ends
        result = run_script("main.py", "--name", f"Ada {count}", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "reads to 1 replica" in result.stdout
        total = f"{count} user{'s' if count > 1 else ''} in total; newest {count}:"
        assert total in result.stdout, result.stdout
        assert f"#{count} Ada {count}" in result.stdout
    result = run_script("transactions.py", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Rows saved by this run: 0 for 'Alice (run " in result.stdout
    assert "1 for 'Bob (run " in result.stdout, result.stdout


def test_the_app_post_then_get_by_the_same_client_10_times_out_of_10(
        pg: Postgres, dbname: str, db_url: str, replica_url: str,
        standby: servers.PostgresServer, tmp_path: Path) -> None:
    create_tables(pg, db_url)
    replayed(pg, standby)
    log = tmp_path / "uvicorn.log"
    env = script_env(pg, db_url, DATABASE_URL_REPLICA=replica_url)
    with app_running(env, log) as client:
        seen = 0
        for i in range(10):
            created = client.post("/users", json={"name": f"Ada {i}"})
            assert created.status_code == 201, created.text
            assert read_your_writes.COOKIE in created.headers.get("set-cookie", "")
            listed = client.get("/users", params={"limit": 100})
            assert listed.status_code == 200
            seen += f"Ada {i}" in [user["name"] for user in listed.json()]
        assert seen == 10
        # Clients that wrote nothing: the replica's view. The app's own writes replayed (its
        # reads may go to the replica again), then replay paused and a row another program
        # writes on the primary: the replica lacks it.
        replayed(pg, standby)
        servers.admin_execute(standby, "SELECT pg_wal_replay_pause()")
        try:
            execute(pg, dbname, "INSERT INTO demo_users (name, created_at) VALUES ('Grace', now())")
            with httpx.Client(base_url=str(client.base_url), timeout=30) as reader:
                views = ["Grace" in [u["name"] for u in reader.get("/users").json()]
                         for _ in range(10)]
            assert not any(views[1:]), views  # the first may run while the replica connects
        finally:
            servers.admin_execute(standby, "SELECT pg_wal_replay_resume()")
        standby.stop()
        try:
            with httpx.Client(base_url=str(client.base_url), timeout=30) as reader:
                assert [reader.get("/users").status_code for _ in range(10)] == [200] * 10
        finally:
            standby.start()
    output = log.read_text()
    assert "Traceback" not in output and servers.APP_PASSWORD not in output
    assert sum("Read replica" in line for line in output.splitlines()) == 1, output


def test_app_with_three_workers_on_seven_slots(few_slots: Postgres, tmp_path: Path) -> None:
    three_workers_on_seven_slots(few_slots, tmp_path, "/users")


def test_main_with_every_slot_taken_says_the_cause_and_the_fix(few_slots: Postgres) -> None:
    assert few_slots.server is not None
    url = few_slots.url(app_database(few_slots.server))
    result, _ = every_slot_taken(few_slots, url, "main.py")
    line = error_line(result, written="Inserted")
    assert line.startswith("Error: The database had no free connection slot for 5 s"), line
    assert ("put a pooler such as PgBouncer in front of the server, lower pool_size in "
            "DATABASE_URL, or raise the server's max_connections") in line  # 127.0.0.1: not Neon
    assert "-pooler" not in line, line
