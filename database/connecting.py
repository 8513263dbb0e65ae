"""Opening a connection: retried with backoff while the server is not ready, within a deadline."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import sys
import time
from typing import Any

import asyncpg

from database.errors import (
    DatabaseError,
    explain_connect_error,
    explain_gave_up,
    failure_reason,
    neon_failure,
)
from database.settings import DatabaseSettings

ATTEMPT_TIMEOUT = 10.0  # seconds for one attempt: a host that accepts and never answers

NOT_READY = (
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    TimeoutError,
    asyncio.TimeoutError,
)


def is_not_ready(exc: BaseException, s: DatabaseSettings) -> bool:
    """True for connect errors that mean "not ready yet": worth waiting for."""
    if isinstance(exc, NOT_READY):
        return True
    neon = neon_failure(exc)  # Neon's proxy: a compute that did not wake, its rate limits
    if neon is not None:
        return neon.wait
    if isinstance(exc, (socket.gaierror, ssl.SSLError)) or not isinstance(exc, OSError):
        return False  # unknown host, TLS failure, wrong password, unknown database, ...
    if "rejected SSL upgrade" in str(exc):
        return False  # a server without TLS: waiting will not give it TLS
    # Refused, reset, unreachable: a compute waking up, a server restarting. But a server
    # without direct TLS hangs up on the TLS hello: that one is final.
    return not (s.direct_tls and isinstance(exc, ConnectionResetError))


class RetryingConnect:
    """asyncpg's ``connect``, retried with backoff while the server is not ready yet.

    Used as the pool's ``connect`` hook, so every new connection gets it: the first one (a Neon
    compute waking from scale-to-zero) and any reconnect later on.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings

    async def __call__(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        s = self.settings
        deadline = time.monotonic() + s.connect_deadline
        delay, attempt = 0.25, 1
        while True:
            remaining = deadline - time.monotonic()
            kwargs["timeout"] = max(0.1, min(ATTEMPT_TIMEOUT, remaining))
            try:
                return await asyncpg.connect(*args, **kwargs)
            except Exception as exc:
                if not is_not_ready(exc, s):
                    raise DatabaseError(explain_connect_error(exc, s)) from exc
                reason = failure_reason(exc)
                remaining = deadline - time.monotonic()
                if remaining <= 0.05:
                    raise DatabaseError(explain_gave_up(exc, s, attempt)) from exc
                wait = min(delay, 4.0, remaining) * random.uniform(0.5, 1.0)  # backoff, jitter
                print(
                    f"Database at {s.host} not ready ({reason}); retrying in {wait:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                await asyncio.sleep(wait)
                delay, attempt = delay * 2, attempt + 1
