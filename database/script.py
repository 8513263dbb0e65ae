"""Running a script: connect and close, one line per error, a clean exit on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any

from tortoise import Tortoise

from database.config import MODELS, tortoise_config
from database.errors import USER_FACING, explain_error
from database.schema import create_schema
from database.settings import DatabaseSettings, load_settings


@asynccontextmanager
async def connect(models: Iterable[str] = MODELS) -> AsyncIterator[DatabaseSettings]:
    """Initialise Tortoise from DATABASE_URL, create the schema, and close on every path."""
    settings = load_settings()
    await Tortoise.init(config=tortoise_config(settings, models))
    try:
        await create_schema()
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
        asyncio.run(_cancel_on_signals(main))
    except Interrupted as exc:
        name = "Ctrl-C" if exc.signum == signal.SIGINT else "SIGTERM"
        _exit(128 + exc.signum, f"Interrupted ({name}): stopped cleanly; nothing unfinished was saved.")
    except KeyboardInterrupt:  # platforms without loop signal handlers (Windows)
        _exit(130, "Interrupted (Ctrl-C): stopped cleanly; nothing unfinished was saved.")
    except USER_FACING as exc:
        _exit(1, f"Error: {explain_error(exc)}")


def one_line_errors_for_other_tools() -> None:
    """For tools that use our config without ``run()`` (the Tortoise CLI): one line per error.

    A user-facing error that ends such a process prints as ``Error: ...`` (exit code 1)
    instead of a traceback; any other exception keeps Python's usual report.
    """
    sys.excepthook = _one_line_or_traceback


def _one_line_or_traceback(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    if isinstance(exc, USER_FACING):
        print(f"Error: {explain_error(exc)}", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, exc, tb)


def _exit(code: int, line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code)


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
