"""The web app's side: database errors answered 503, 409 or 422, one line each in the log
(docs/app-on-neon.md), and a failed start-up as one line."""

from __future__ import annotations

import functools
import logging
import sys
from typing import TYPE_CHECKING, Any

from tortoise_neon.client import MaybeSaved, Unavailable
from tortoise_neon.constraints import printable, problem, refusal, violation
from tortoise_neon.errors import LOST, USER_FACING, DatabaseError, explain_error
from tortoise_neon.read_your_writes import ReadYourWrites

from tortoise.exceptions import IntegrityError, ValidationError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

RETRY_AFTER = "2"  # seconds: a Neon compute wakes in about one
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class OneLineStartupErrors:
    """ASGI middleware: a start-up that fails on an error the user can fix is logged as the
    scripts' ``Error: ...`` line instead of Starlette's traceback; a bug keeps its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_one_line(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failure = sys.exc_info()[1]  # Starlette sends this while handling the error
                if isinstance(failure, USER_FACING):
                    message = {**message, "message": f"Error: {explain_error(failure)}"}
            await send(message)

        await self.app(scope, receive, send_one_line if scope["type"] == "lifespan" else send)


def answer_database_errors(app: FastAPI, *, show_constraint_names: bool = False) -> None:
    """A database that is down answers 503, a write a constraint refused 409 or 422 (the
    constraint's name only with ``show_constraint_names``), a value the model refused 422; the
    package's log lines go through uvicorn's handlers unless logging was configured. It also
    adds the ``ReadYourWrites`` middleware, which each request's reads are routed by."""
    # The driver's errors, not Python's ConnectionError: an endpoint's other services raise it.
    for kind in (DatabaseError, *(kind for kind in LOST if kind is not ConnectionError)):
        app.add_exception_handler(kind, _database_unavailable)  # type: ignore[arg-type]
    constraint_broken = functools.partial(_constraint_broken,
                                          show_constraint_names=show_constraint_names)
    app.add_exception_handler(IntegrityError, constraint_broken)  # type: ignore[arg-type]
    app.add_exception_handler(ValidationError, _invalid_for_the_model)  # type: ignore[arg-type]
    app.add_middleware(ReadYourWrites)  # type: ignore[arg-type]
    package = logging.getLogger("tortoise_neon")
    if not package.handlers and not logging.getLogger().handlers:
        for handler in logging.getLogger("uvicorn").handlers:
            package.addHandler(handler)


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None
          ) -> JSONResponse:
    from fastapi.responses import JSONResponse  # FastAPI is the app's, not a requirement

    return JSONResponse(body, status_code=status, headers=headers)


async def _constraint_broken(request: Request, exc: Exception, *,
                             show_constraint_names: bool = False) -> JSONResponse:
    """409 or 422 for a write a constraint refused; other integrity errors are bugs (500)."""
    broken = violation(exc)
    if broken is None:
        raise exc
    log.warning("%s %s: %s", printable(request.method, 20), printable(request.url.path),
                printable(broken.line()))
    return _json(broken.body(show_constraint_names), broken.status)


async def _invalid_for_the_model(request: Request, exc: Exception) -> JSONResponse:
    field, kind, type_ = refusal(exc)
    log.warning("%s %s: refused by the model: %s%s", printable(request.method, 20),
                printable(request.url.path), f"field {field}: " if field else "", kind)
    return _json(problem(field, kind, type_), 422)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("Error: %s", explain_error(exc))
    body: dict[str, Any] = {"detail": "the database is not answering: try again"}
    if request.method not in SAFE_METHODS:
        # unknown when the connection was lost after the change was sent (a COMMIT, say)
        maybe = isinstance(exc, MaybeSaved) or not isinstance(exc, (Unavailable, DatabaseError))
        body["may_have_been_saved"] = maybe
    return _json(body, 503, {"Retry-After": RETRY_AFTER})
