"""The scripts as command-line tools: a closed output, and Ctrl-C while they start."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.library.conftest import (
    ROOT,
    Postgres,
    execute,
    migrate_database,
    query,
    script_env,
    start_script,
)

LOCK = 4_242_001  # an advisory lock the test holds to pause the script's INSERT
SIGPIPE_EXIT = 141  # what a shell shows for `seq 1000000 | head -1`'s seq: 128 + SIGPIPE


def pause_inserts(pg: Postgres, dbname: str) -> None:
    """The quickstart's table (from the migrations), with a trigger that waits for the test's
    advisory lock."""
    migrate_database(pg, dbname)
    execute(pg, dbname, f"""
        CREATE FUNCTION wait_for_the_test() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_advisory_xact_lock_shared({LOCK}); RETURN NULL; END $$;
        CREATE TRIGGER paused AFTER INSERT ON demo_users
            FOR EACH ROW EXECUTE FUNCTION wait_for_the_test();
    """)


def users(pg: Postgres, dbname: str) -> int:
    return query(pg, dbname, "SELECT count(*) FROM demo_users")[0][0]


def test_output_closed_by_head_exits_quietly(pg: Postgres, dbname: str, db_url: str,
                                             tmp_path: Path) -> None:
    """`python main.py | head -1`: head reads the first line and exits while the script is
    inserting; the script's next line finds no reader. No error line, no "Exception ignored"."""
    pause_inserts(pg, dbname)

    loop = asyncio.new_event_loop()  # the lock's session stays open while the script runs
    admin = loop.run_until_complete(pg.admin(dbname))
    try:
        loop.run_until_complete(admin.execute("SELECT pg_advisory_lock($1)", LOCK))
        script = start_script("main.py", env=script_env(pg, db_url), cwd=tmp_path)
        assert script.stdout is not None
        head = subprocess.Popen(["head", "-1"], stdin=script.stdout, stdout=subprocess.PIPE,
                                text=True)
        script.stdout.close()  # only head reads the script's output now
        first_line, _ = head.communicate(timeout=60)
    finally:
        loop.run_until_complete(admin.close())  # releases the lock: "Inserted ..." comes next
        loop.close()
    _, err = script.communicate(timeout=60)
    assert first_line.startswith("Connected to PostgreSQL at ")
    assert err == ""  # neither a database error nor Python's "Exception ignored ... BrokenPipe"
    assert script.returncode == SIGPIPE_EXIT
    assert users(pg, dbname) == 1  # the committed INSERT, nothing else


def test_output_closed_before_a_buffered_write_exits_quietly(pg: Postgres, dbname: str,
                                                            db_url: str, tmp_path: Path) -> None:
    """Output to a pipe is buffered (no PYTHONUNBUFFERED): it is written at the end, when the
    reader may be long gone (`python main.py | true`)."""
    env = script_env(pg, db_url)
    del env["PYTHONUNBUFFERED"]
    script = start_script("main.py", env=env, cwd=tmp_path)
    assert script.stdout is not None
    script.stdout.close()  # the reader has gone before the script writes a line
    _, err = script.communicate(timeout=60)
    assert err == ""
    assert script.returncode == SIGPIPE_EXIT
    assert users(pg, dbname) == 1


def wait_until_importing(proc: subprocess.Popen[str]) -> None:
    """Until the script is loading its dependencies: Python's _ssl is mapped (the database
    package loads it, after its Ctrl-C handler; Python's own start-up comes before)."""
    if "_ssl" in sys.builtin_module_names:  # a build without shared modules: a fixed moment
        time.sleep(0.15)
        return
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "_ssl" in maps.read_text():
                return
        except OSError:  # it has just exited: the assertion below says how
            break
        time.sleep(0.002)
    raise AssertionError(f"the script never loaded _ssl: {proc.communicate()}")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("script", ["main.py", "transactions.py"])
def test_ctrl_c_while_starting_is_one_line(pg: Postgres, dbname: str, db_url: str,
                                           tmp_path: Path, script: str) -> None:
    """Ctrl-C while the imports run (the first half second): the line and exit code of any
    other moment, no KeyboardInterrupt traceback, nothing written."""
    for delay in (0.0, 0.05, 0.1, 0.2):
        proc = start_script(script, env=script_env(pg, db_url), cwd=tmp_path)
        wait_until_importing(proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (delay, out, err)
        assert err.splitlines() == [
            "Interrupted (Ctrl-C): stopped cleanly; nothing unfinished was saved."], (delay, err)
        assert "Traceback" not in err
    rows = query(pg, dbname, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_users'")
    assert rows[0][0] == 0 or users(pg, dbname) == 0


def test_the_handler_is_only_for_the_program_being_run() -> None:
    """A tool that imports the package (uvicorn, the Tortoise CLI, pytest) keeps its Ctrl-C."""
    code = ("import signal\n"
            "def tool():\n    import database\n"
            "tool()\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize("script", ["main.py", "transactions.py"])
def test_a_python_without_the_requirements_is_one_line(script: str, tmp_path: Path) -> None:
    """Outside the venv (here: without site-packages), one line saying what to run."""
    result = subprocess.run([sys.executable, "-S", str(ROOT / script)], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        ("Error: this project needs Python 3.10+ with its requirements (tortoise-orm, asyncpg, "
        f"python-dotenv not installed for {sys.executable}): python3 -m venv .venv && "
        ". .venv/bin/activate && pip install -r requirements.txt (Windows: "
        ".venv\\Scripts\\Activate.ps1)")]


def test_a_python_older_than_3_10_is_one_line() -> None:
    code = ("import sys; sys.version_info = (3, 9, 18, 'final', 0); sys.version = '3.9.18'; "
            "import database")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        ("Error: this project needs Python 3.10+ with its requirements (this is Python 3.9.18): "
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt "
        "(Windows: .venv\\Scripts\\Activate.ps1)")]
