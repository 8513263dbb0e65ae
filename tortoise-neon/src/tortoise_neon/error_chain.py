"""The errors under an error: its causes, and the driver's own error under Tortoise's."""

from __future__ import annotations

from collections.abc import Iterator

from tortoise.exceptions import BaseORMException, ValidationError


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then the errors it wraps (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def driver_error(exc: BaseException) -> BaseException:
    """The driver's error that Tortoise wrapped (a ValidationError's own text names the field)."""
    while (isinstance(exc, BaseORMException) and isinstance(exc.__cause__, Exception)
           and not isinstance(exc, ValidationError)):
        exc = exc.__cause__
    return exc
