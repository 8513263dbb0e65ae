"""Running a script: connect and close, one line per error, a clean exit on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, NoReturn

from tortoise_neon.config import tortoise_config
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.environment import load_settings
from tortoise_neon.errors import USER_FACING, explain_error
from tortoise_neon.migrate import migrate

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


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a script's ``main()``: a clean exit on Ctrl-C or SIGTERM, and one line per database
    or network error; any other exception is a bug and keeps its traceback."""
    try:
        with log_lines_on_stderr():
            signum = asyncio.run(_cancel_on_signals(main))
        sys.stdout.flush()  # output to a pipe is buffered: a closed one shows here
    except KeyboardInterrupt:  # platforms without loop signal handlers (Windows)
        signum = signal.SIGINT
    except BrokenPipeError:  # the output was closed (`python main.py | head -1`), not the connection
        _output_closed()
    except USER_FACING as exc:
        _exit(1, f"Error: {explain_error(exc)}")
    if signum is not None:
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        _exit(128 + signum, f"Interrupted ({name}): stopped cleanly; nothing unfinished was saved.")


@contextmanager
def log_lines_on_stderr() -> Iterator[None]:
    """The package's log as plain lines on stderr while a script runs, unless the script
    configured logging itself."""
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


def _exit(code: int, line: str) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code)


def _output_closed() -> NoReturn:
    """Stop without a word when the reader has gone, with the status ``cat`` or ``seq`` get
    there (141: 128 + SIGPIPE)."""
    with suppress(OSError, ValueError):  # Python's last flush of stdout must not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(141)


async def _cancel_on_signals(main: Coroutine[Any, Any, None]) -> int | None:
    """Run ``main``; on SIGINT or SIGTERM cancel it, so that ``finally`` blocks and rollbacks run,
    and return the signal's number."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:  # a second signal while cleaning up is ignored: cleanup is bounded
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            loop.add_signal_handler(signum, on_signal, signum)
    try:
        await task
    except asyncio.CancelledError:
        if received:
            return received[0]
        raise
    return None
