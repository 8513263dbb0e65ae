"""The web app's side: one line per database failure, 503 when the database is down.

- ``OneLineStartupErrors``: a start-up failure as the scripts show it (one line, no traceback);
- ``answer_503_when_down(app)`` (which also installs ``ReadYourWrites``, replicas.py): a
  request the database could not serve answers 503 with
  ``Retry-After``, and the why goes to the server's log as one line (never to the client); a
  write that breaks a constraint answers 409 (a duplicate) or 422 (the request's own values:
  a missing one, a reference to nothing, a failed check, a value the model refused), in
  FastAPI's own 422 shape (``{"detail": [{"loc": ["body", "<field>"], "msg": ..., "type":
  ...}]}``, constraints.py ``problem``), naming the field (the constraint's name too, as the
  item's ``constraint``, with ``show_constraint_names=True``). Its log line says the field and
  the kind of failure, escaped and cut short: never the client's values.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from tortoise_neon.client import LOST, MaybeSaved, Unavailable
from tortoise_neon.constraints import printable, problem, refusal, violation
from tortoise_neon.errors import USER_FACING, DatabaseError, explain_error
from tortoise_neon.read_your_writes import ReadYourWrites

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

RETRY_AFTER = "2"  # seconds: a Neon compute wakes in about one
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

Message = MutableMapping[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


class OneLineStartupErrors:
    """ASGI middleware: when start-up fails on a database error, uvicorn prints one line.

    Starlette reports a failed lifespan start-up with the whole traceback as its message, which
    uvicorn logs before "Application startup failed. Exiting." For the errors a user can fix
    (a wrong DATABASE_URL, a database that is down, a missing table) the message becomes the
    same ``Error: ...`` line the scripts print; a bug keeps its traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failure = sys.exc_info()[1]  # Starlette sends this while handling the error
                if isinstance(failure, USER_FACING):
                    message = {**message, "message": f"Error: {explain_error(failure)}"}
            await send(message)

        await self.app(scope, receive, send_one_line)


def answer_503_when_down(app: FastAPI, *, show_constraint_names: bool = False) -> None:
    """Register the handler: a database that is down, restarting or unreachable is a 503.

    The body says whether the change may have been saved (a write whose connection was lost
    after it was sent: ``"may_have_been_saved": true``, check before sending it again); the
    log gets the same ``Error: ...`` line the scripts print, once per request. Errors that are
    bugs are not handled here: they keep their traceback and their 500.

    A write a constraint refused answers 409/422 naming the field, in the shape of FastAPI's
    own 422 (``detail``: a list of ``{loc, msg, type}``); ``show_constraint_names`` adds the
    constraint's name (``library_members_handle_key``: it names the table) to the item as
    ``constraint``, for an API whose clients may know the schema. Off by default.
    """
    # The driver's own connection errors, not Python's ConnectionError: that one can come from
    # anything else an endpoint talks to (another HTTP API), which is not the database.
    from tortoise.exceptions import IntegrityError, ValidationError

    for kind in (DatabaseError, *(kind for kind in LOST if kind is not ConnectionError)):
        app.add_exception_handler(kind, _database_unavailable)  # type: ignore[arg-type]
    constraint_broken = functools.partial(_constraint_broken,
                                          show_constraint_names=show_constraint_names)
    app.add_exception_handler(IntegrityError, constraint_broken)  # type: ignore[arg-type]
    app.add_exception_handler(ValidationError, _invalid_for_the_model)  # type: ignore[arg-type]
    # With DATABASE_URL_REPLICA: a client reads its own writes in its next requests.
    app.add_middleware(ReadYourWrites)  # type: ignore[arg-type]
    _log_through_uvicorn()


async def _constraint_broken(request: Request, exc: Exception, *,
                             show_constraint_names: bool = False) -> JSONResponse:
    """409 or 422 for a write a constraint refused (nothing saved); other integrity errors
    are bugs: raised again, they keep their traceback and their 500. The log line names the
    table, field and constraint (the server's names, never the values)."""
    from fastapi.responses import JSONResponse

    broken = violation(exc)
    if broken is None:
        raise exc
    log.warning("%s %s: %s", _where(request), printable(request.url.path),
                printable(broken.line()))
    return JSONResponse(broken.body(show_constraint_names), status_code=broken.status)


async def _invalid_for_the_model(request: Request, exc: Exception) -> JSONResponse:
    """422 for values a model's field refused before anything was sent: the field and the
    kind of failure (``the value is longer than 50 characters``), never the value."""
    from fastapi.responses import JSONResponse

    field, kind, type_ = refusal(exc)
    log.warning("%s %s: refused by the model: %s%s", _where(request),
                printable(request.url.path), f"field {field}: " if field else "", kind)
    return JSONResponse(problem(field, kind, type_), status_code=422)


def _where(request: Request) -> str:
    return printable(request.method, 20)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    from fastapi.responses import JSONResponse

    log.error("Error: %s", explain_error(exc))
    body: dict[str, Any] = {"detail": "the database is not answering: try again"}
    if request.method not in SAFE_METHODS:
        # unknown when the connection was lost after the change was sent (a COMMIT, say)
        maybe = isinstance(exc, MaybeSaved) or not isinstance(exc, (Unavailable, DatabaseError))
        body["may_have_been_saved"] = maybe
    return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER})


def _log_through_uvicorn() -> None:
    """The package's log lines in uvicorn's log, formatted as uvicorn's own, when uvicorn
    configured logging and nothing else did (a root handler: the app's own configuration)."""
    package, server = logging.getLogger("tortoise_neon"), logging.getLogger("uvicorn")
    if package.handlers or logging.getLogger().handlers:
        return
    for handler in server.handlers:
        package.addHandler(handler)
