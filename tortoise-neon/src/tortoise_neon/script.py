"""Running a script: connect and close, one line per error, a clean exit on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import atexit
import io
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from tortoise_neon.config import tortoise_config
from tortoise_neon.connecting import on_connected as CONNECTED
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.environment import load_settings
from tortoise_neon.errors import USER_FACING, explain_error
from tortoise_neon.schema import migrate

from tortoise import Tortoise


@asynccontextmanager
async def connect(models: Iterable[str] | None = None) -> AsyncIterator[DatabaseSettings]:
    """Initialise Tortoise from DATABASE_URL, apply the migrations, and close on every path."""
    settings = load_settings()
    config = tortoise_config(settings, models)
    await Tortoise.init(config=config)
    try:
        await migrate(config["apps"])
        print(settings.describe())
        yield settings
    finally:
        await Tortoise.close_connections()


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a script's ``main()``: a clean exit on Ctrl-C or SIGTERM, and one line per error.

    Errors from the database or the network become one line; any other exception is a bug in
    the script and keeps its traceback.
    """
    try:
        with log_lines_on_stderr():
            asyncio.run(_cancel_on_signals(main))
        sys.stdout.flush()  # output to a pipe is buffered: a closed one shows here
    except Interrupted as exc:
        _exit(128 + exc.signum, interrupted_line(exc.signum))
    except KeyboardInterrupt:  # platforms without loop signal handlers (Windows)
        _exit(130, interrupted_line(signal.SIGINT))
    except BrokenPipeError:
        # The output was closed (`python main.py | head -1`): asyncpg reports a lost database
        # connection as its own error, so this is stdout (or stderr).
        _output_closed()
    except USER_FACING as exc:
        _exit(1, f"Error: {explain_error(exc)}")


@contextmanager
def log_lines_on_stderr() -> Iterator[None]:
    """The package's log (the ``database`` logger) as plain lines on stderr, while a script runs.

    The package only logs ("Database at ... not ready; retrying ..."); a program decides where
    that goes. A script that configured logging itself (a root handler) keeps its own way.
    """
    package = logging.getLogger("tortoise_neon")
    if package.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)


def one_line_errors_for_other_tools() -> None:
    """For tools that use our config without ``run()`` (the Tortoise CLI): one line per error.

    A user-facing error that ends such a process prints as ``Error: ...`` (exit code 1)
    instead of a traceback; any other exception keeps Python's usual report.
    """
    sys.excepthook = _one_line_or_traceback
    if _is_the_tortoise_cli() and not isinstance(sys.stdout, HeldOutput):
        held = HeldOutput(sys.stdout)
        sys.stdout = held  # type: ignore[assignment]
        CONNECTED.append(held.release)
        atexit.register(held.release)


def _is_the_tortoise_cli() -> bool:
    """`tortoise ...` or `python -m tortoise ...` (not an app or a test that reads the config)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return os.path.basename(sys.argv[0] if sys.argv else "") == "tortoise" or (
        spec is not None and spec.name.split(".")[0] == "tortoise")


class HeldOutput(io.TextIOBase):
    """The Tortoise CLI's standard output, held until the database answers: `tortoise migrate`
    prints its plan before its first statement (and Tortoise's recorder takes a failed
    connection for an empty database), so a wrong password would come after a plan that reads
    as if migrations were applied. The held lines are shown once a connection is made, or at a
    normal exit (a command that needs no database); an error ends the process with its one
    line and nothing before it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.held: list[str] = []
        self.released = False

    def write(self, text: str) -> int:
        if self.released:
            return int(self.stream.write(text))
        self.held.append(text)
        return len(text)

    def flush(self) -> None:
        if self.released:
            self.stream.flush()

    def release(self) -> None:
        if not self.released:
            self.released = True
            try:
                self.stream.write("".join(self.held))
                self.stream.flush()
            except (OSError, ValueError):  # the reader has gone (`| head`), or it was closed
                pass
            self.held.clear()

    def drop(self) -> None:
        self.held.clear()


def interrupted_line(signum: int) -> str:
    """The line a script prints when Ctrl-C (or SIGTERM) stops it."""
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    return f"Interrupted ({name}): stopped cleanly; nothing unfinished was saved."


def _one_line_or_traceback(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    if isinstance(sys.stdout, HeldOutput):
        if isinstance(exc, USER_FACING):
            sys.stdout.drop()
        else:
            sys.stdout.release()
    if isinstance(exc, USER_FACING):
        print(f"Error: {explain_error(exc)}", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, exc, tb)


def _exit(code: int, line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code)


SIGPIPE = 13


def _output_closed() -> None:
    """Stop without a word, as command-line tools do when their reader has gone.

    What a committed statement wrote stays; an open transaction was rolled back on the way out.
    The exit status is the one a shell shows for ``cat``, ``seq`` or ``git log`` in the same
    place (stopped by SIGPIPE): 141, so ``set -o pipefail`` treats the script like them.
    """
    try:  # Python's last flush of stdout at exit must not fail again ("Exception ignored")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(128 + SIGPIPE)


async def _cancel_on_signals(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; on SIGINT or SIGTERM cancel it, so that ``finally`` blocks and rollbacks run."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:  # a second signal while cleaning up is ignored: cleanup is bounded
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            pass
    try:
        await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
