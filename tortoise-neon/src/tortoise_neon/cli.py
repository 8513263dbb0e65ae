"""The Tortoise CLI on the package's config: one ``Error:`` line instead of a traceback, and its
output held until the database answers (no migration plan before a wrong password's line)."""

from __future__ import annotations

import atexit
import functools
import io
import os
import sys
from contextlib import suppress
from typing import Any

from tortoise_neon.connecting import on_connected
from tortoise_neon.errors import USER_FACING, explain_error


def one_line_errors_for_other_tools(variable: str = "DATABASE_URL") -> None:
    """A user-facing error that ends the process prints one line naming ``variable`` (exit 1);
    any other exception keeps Python's report."""
    sys.excepthook = functools.partial(_one_line_or_traceback, variable=variable)
    if _is_the_tortoise_cli() and not isinstance(sys.stdout, HeldOutput):
        held = HeldOutput(sys.stdout)
        sys.stdout = held  # type: ignore[assignment]
        on_connected.append(held.release)
        atexit.register(held.release)


def _is_the_tortoise_cli() -> bool:
    """`tortoise ...` or `python -m tortoise ...` (not an app or a test that reads the config)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return os.path.basename(sys.argv[0] if sys.argv else "") == "tortoise" or (
        spec is not None and spec.name.split(".")[0] == "tortoise")


class HeldOutput(io.TextIOBase):
    """Standard output held until a connection is made or the process exits normally; an error
    drops it, so its line comes alone."""

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
            with suppress(OSError, ValueError):  # the reader has gone (`| head`), or it closed
                self.stream.write("".join(self.held))
                self.stream.flush()
            self.held.clear()


def _one_line_or_traceback(kind: type[BaseException], exc: BaseException, tb: Any, *,
                           variable: str) -> None:
    if isinstance(sys.stdout, HeldOutput):
        if isinstance(exc, USER_FACING):
            sys.stdout.held.clear()
        else:
            sys.stdout.release()
    if isinstance(exc, USER_FACING):
        print(f"Error: {explain_error(exc, variable)}", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, exc, tb)
