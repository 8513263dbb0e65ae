"""A web app's start-up failure as the scripts show it: one line, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from database.errors import USER_FACING, explain_error

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
