"""The scripts as command-line tools: a closed output, and Ctrl-C at every moment of ``run()``."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import tortoise_neon
from tortoise_neon import SCHEMA_LOCK_ID
from tortoise_neon.testing.fixtures import (
    Postgres,
    execute,
    migrate_database,
    project,
    query,
    script_env,
    start_script,
)

import pytest

LOCK = 4_242_001  # an advisory lock the test holds to pause the script's INSERT
SIGPIPE_EXIT = 141  # what a shell shows for `seq 1000000 | head -1`'s seq: 128 + SIGPIPE


def pause_inserts(pg: Postgres, dbname: str) -> None:
    """The project's table (from the migrations), with a trigger that waits for the test's
    advisory lock."""
    migrate_database(pg, dbname)
    execute(pg, dbname, f"""
        CREATE FUNCTION wait_for_the_test() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_advisory_xact_lock_shared({LOCK}); RETURN NULL; END $$;
        CREATE TRIGGER paused AFTER INSERT ON library_members
            FOR EACH ROW EXECUTE FUNCTION wait_for_the_test();
    """)


def members(pg: Postgres, dbname: str) -> int:
    return query(pg, dbname, "SELECT count(*) FROM library_members")[0][0]


def test_output_closed_by_head_exits_quietly(pg: Postgres, dbname: str, db_url: str,
                                             tmp_path: Path) -> None:
    """`python members.py | head -1`: head reads the first line and exits while the script is
    inserting; the script's next line finds no reader. No error line, no "Exception ignored"."""
    pause_inserts(pg, dbname)

    loop = asyncio.new_event_loop()  # the lock's session stays open while the script runs
    admin = loop.run_until_complete(pg.admin(dbname))
    try:
        loop.run_until_complete(admin.execute("SELECT pg_advisory_lock($1)", LOCK))
        script = start_script("members.py", env=script_env(pg, db_url), cwd=tmp_path)
        assert script.stdout is not None
        head = subprocess.Popen(["head", "-1"], stdin=script.stdout, stdout=subprocess.PIPE,
                                text=True)
        script.stdout.close()  # only head reads the script's output now
        first_line, _ = head.communicate(timeout=60)
    finally:
        loop.run_until_complete(admin.close())  # releases the lock: "Added ..." comes next
        loop.close()
    _, err = script.communicate(timeout=60)
    assert first_line.startswith("Connected to PostgreSQL at ")
    assert err == ""  # neither a database error nor Python's "Exception ignored ... BrokenPipe"
    assert script.returncode == SIGPIPE_EXIT
    assert members(pg, dbname) == 1  # the committed INSERT, nothing else


def test_output_closed_before_a_buffered_write_exits_quietly(pg: Postgres, dbname: str,
                                                            db_url: str, tmp_path: Path) -> None:
    """Output to a pipe is buffered (no PYTHONUNBUFFERED): it is written at the end, when the
    reader may be long gone (`python members.py | true`)."""
    env = script_env(pg, db_url)
    del env["PYTHONUNBUFFERED"]
    script = start_script("members.py", env=env, cwd=tmp_path)
    assert script.stdout is not None
    script.stdout.close()  # the reader has gone before the script writes a line
    _, err = script.communicate(timeout=60)
    assert err == ""
    assert script.returncode == SIGPIPE_EXIT
    assert members(pg, dbname) == 1


INTERRUPTED = "Interrupted (Ctrl-C): stopped cleanly; nothing unfinished was saved."
SCRIPTS = ["members.py", "ledger.py"]  # a plain write, and transactions


def local_url(port: int) -> str:
    """A URL for a test-held listener on this machine: plain TCP (the listener speaks no TLS),
    and a connect deadline far longer than any test, so the script is still connecting or
    retrying whenever the signal comes."""
    return f"postgresql://quickstart:secret@127.0.0.1:{port}/neondb?sslmode=disable&connect_timeout=600"


def interrupt(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    return out, err


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_connecting_to_a_silent_server(tmp_path: Path, script: str) -> None:
    """Ctrl-C while the script waits for a server that accepted the connection and says nothing
    (a host behind a black hole, a compute that never wakes): the test holds that server."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        env = script_env(None, local_url(listener.getsockname()[1]))
        proc = start_script(script, env=env, cwd=tmp_path)
        held, _ = listener.accept()  # the script is inside run(), connecting
        with held:
            held.settimeout(60)
            assert held.recv(8)  # its startup message has arrived: it waits for the answer
            _, err = interrupt(proc)
    assert err.splitlines() == [INTERRUPTED]


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_retrying_is_one_line(tmp_path: Path, script: str) -> None:
    """Ctrl-C while the script waits to retry: the server ends every connection at once (a
    compute restarting), so the script retries until the deadline (600 s here)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        env = script_env(None, local_url(listener.getsockname()[1]))
        proc = start_script(script, env=env, cwd=tmp_path)
        assert proc.stderr is not None
        listener.accept()[0].close()  # the first attempt, ended by the "server"
        waiting = proc.stderr.readline()  # printed before the script sleeps, then retries
        assert waiting.startswith("Database at 127.0.0.1:") and "retrying" in waiting, waiting
        # Nothing more is written until the signal, so readline() buffered nothing beyond the
        # line, and communicate() (which reads the pipe itself) gets all that comes next.
        _, err = interrupt(proc)
    assert err.splitlines() == [INTERRUPTED]


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_waiting_for_the_schema_lock(pg: Postgres, dbname: str, db_url: str,
                                                  tmp_path: Path, script: str) -> None:
    """Ctrl-C while another process holds the schema lock (a first run starting beside
    another): the script waits inside migrate(); nothing is created."""
    loop = asyncio.new_event_loop()
    admin = loop.run_until_complete(pg.admin(dbname))
    try:
        loop.run_until_complete(admin.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_ID))
        proc = start_script(script, env=script_env(pg, db_url), cwd=tmp_path)
        wait_for_lock_waiter(pg, dbname, proc)
        _, err = interrupt(proc)
    finally:
        loop.run_until_complete(admin.close())
        loop.close()
    assert err.splitlines() == [INTERRUPTED]
    rows = query(pg, dbname, "SELECT count(*) FROM pg_tables WHERE tablename = 'library_members'")
    assert rows[0][0] == 0


def test_ctrl_c_mid_insert_saves_nothing(pg: Postgres, dbname: str, db_url: str,
                                         tmp_path: Path) -> None:
    """Ctrl-C while members.py's INSERT waits for a lock the test holds: rolled back."""
    pause_inserts(pg, dbname)
    loop = asyncio.new_event_loop()
    admin = loop.run_until_complete(pg.admin(dbname))
    try:
        loop.run_until_complete(admin.execute("SELECT pg_advisory_lock($1)", LOCK))
        proc = start_script("members.py", env=script_env(pg, db_url), cwd=tmp_path)
        wait_for_lock_waiter(pg, dbname, proc)
        out, err = interrupt(proc)
    finally:
        loop.run_until_complete(admin.close())
        loop.close()
    assert out.startswith("Connected to PostgreSQL at ")
    assert err.splitlines() == [INTERRUPTED]
    assert members(pg, dbname) == 0


def wait_for_lock_waiter(pg: Postgres, dbname: str, proc: subprocess.Popen[str]) -> None:
    """Until a session of the script waits for an advisory lock in ``dbname``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if query(pg, dbname, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON "
                             "d.oid = l.database WHERE d.datname = $1 AND "
                             "l.locktype = 'advisory' AND NOT l.granted", dbname)[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError("the script never waited for the lock")


def test_importing_the_package_leaves_ctrl_c_alone() -> None:
    """Importing ``tortoise_neon`` changes no signal handler: Ctrl-C before ``run()`` is Python's
    own (docs/connecting.md), and tools that import it (uvicorn, the Tortoise CLI) keep theirs."""
    code = ("import signal\n"
            "before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]\n"
            "import tortoise_neon\n"
            "print([signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=project(), text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize("script", ["members.py", "ledger.py"])
def test_a_python_without_the_requirements_is_one_line(script: str, tmp_path: Path) -> None:
    """The package without what it needs (here: without site-packages, the package alone on
    the path), one line saying what to run."""
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "tortoise_neon").symlink_to(Path(tortoise_neon.__file__).parent)
    result = subprocess.run([sys.executable, "-S", str(project() / script)], cwd=tmp_path, text=True,
                            env={"PYTHONPATH": str(alone)}, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        ("Error: this project needs Python 3.10+ with its requirements (tortoise-orm, asyncpg, "
        f"python-dotenv not installed for {sys.executable}): python3 -m venv .venv && "
        ". .venv/bin/activate && pip install -r requirements.txt (Windows: "
        ".venv\\Scripts\\Activate.ps1)")]


def test_a_python_older_than_3_10_is_one_line() -> None:
    code = ("import sys; sys.version_info = (3, 9, 18, 'final', 0); sys.version = '3.9.18'; "
            "import tortoise_neon")
    result = subprocess.run([sys.executable, "-c", code], cwd=project(), text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        ("Error: this project needs Python 3.10+ with its requirements (this is Python 3.9.18): "
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt "
        "(Windows: .venv\\Scripts\\Activate.ps1)")]
