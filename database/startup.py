"""Ctrl-C while a script starts (its imports take half a second): one line and exit 130.

``run()`` handles Ctrl-C once the script runs; before that, Python would print a
KeyboardInterrupt traceback from inside whatever module was loading. This module is the first
that ``import database`` loads (``__init__.py``), and scripts import the package before Tortoise
ORM, so its handler is in place for nearly all of the start-up.

Only the program being run gets the handler (``python main.py``, or a module it imports at the
top level): a tool that imports the package from a function (uvicorn, the Tortoise CLI, pytest)
keeps its own Ctrl-C. ``run()`` hands Ctrl-C back to Python as it starts (``release()``); a
program of yours that imports the package and never calls ``run()`` should call ``release()``
once its imports are done.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType


def interrupted_line(signum: int) -> str:
    """The line a script prints when Ctrl-C (or SIGTERM) stops it, at any moment."""
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    return f"Interrupted ({name}): stopped cleanly; nothing unfinished was saved."


def _stop(signum: int, frame: FrameType | None) -> None:
    running_loop = getattr(sys.modules.get("asyncio.events"), "_get_running_loop", None)
    if running_loop is not None and running_loop() is not None:
        raise KeyboardInterrupt  # an event loop the script runs itself: Python's usual Ctrl-C
    # Nothing is open yet (no connection, no transaction), so exit at once: an exception
    # raised here could land inside any module being imported, which may turn it into another
    # error with a traceback (a class body's __set_name__ wraps it in RuntimeError, say).
    try:
        sys.stdout.flush()
    finally:
        print(interrupted_line(signum), file=sys.stderr, flush=True)
        os._exit(128 + signum)


def release() -> None:
    """Python's own Ctrl-C (KeyboardInterrupt) again, once the imports are done."""
    if signal.getsignal(signal.SIGINT) is _stop:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _imported_by_the_program() -> bool:
    """True when the program being run imports this package from its top-level code (directly,
    or through the top-level imports of its own modules)."""
    frame = sys._getframe(1)
    while frame is not None:
        if not frame.f_code.co_filename.startswith("<frozen importlib"):  # the import system
            if frame.f_code.co_name != "<module>":
                return False  # imported from a function: a tool (uvicorn, pytest, the CLI)
            if frame.f_globals.get("__name__") == "__main__":
                return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


if _imported_by_the_program() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _stop)
