"""Opening a connection: retried with backoff while the server is not ready, within a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from tortoise_neon.connect_errors import (
    explain_connect_error,
    explain_gave_up,
    explain_slots_full,
    is_direct_tls_failure,
    is_slots_full,
    neon_failure,
)
from tortoise_neon.errors import DatabaseError, failure_reason
from tortoise_neon.url_settings import REPLICA, DatabaseSettings

import asyncpg

log = logging.getLogger(__name__)  # "tortoise_neon.connecting": the scripts show it on stderr

ATTEMPT_TIMEOUT = 10.0  # seconds for one attempt: a host that accepts and never answers
# Seconds of "connection refused" before giving up. Neon's proxy always listens, so a refusal
# means a wrong host or port, or a local server still starting (which listens within seconds).
REFUSED_FOR = 5.0
# Seconds to wait for a free connection slot (53300) when this process holds no connection: a
# request waits at most this long, then answers 503 (pool.py).
SLOTS_WAIT = 5.0

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
    if is_direct_tls_failure(exc, s):
        return False
    if isinstance(exc, NOT_READY) or is_slots_full(exc):
        return True
    neon = neon_failure(exc)  # Neon's proxy: a compute that did not wake, its rate limits
    if neon is not None:
        return neon.wait
    if isinstance(exc, (socket.gaierror, ssl.SSLError)) or not isinstance(exc, OSError):
        return False  # unknown host, TLS failure, wrong password, unknown database, ...
    # a server without TLS: waiting will not give it TLS
    return "rejected SSL upgrade" not in str(exc)  # refused, reset: waking up, restarting


# Called after each connection made (script.py: the CLI's output is held until the first).
CONNECTED: list[Callable[[], None]] = []


class RetryingConnect:
    """asyncpg's ``connect``, retried with backoff while the server is not ready yet.

    Used as the pool's ``connect`` hook, so every new connection gets it: the first one (a Neon
    compute waking from scale-to-zero) and any reconnect later on.
    """

    def __init__(self, settings: DatabaseSettings, *, announce: bool = False) -> None:
        self.settings = settings
        # The first connection made is said in the log (an app's start-up), as the scripts
        # print it: how it connected, TLS verified or not (DatabaseSettings.describe).
        self.announce = announce
        # Set by client.py when a pooler loses prepared statements: new connections go without.
        self.statement_cache_off = False
        self.pool: Any = None  # the pool this fills (pool.py sets it): what it holds already

    async def __call__(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        s = self.settings
        begun = time.monotonic()
        deadline = begun + s.connect_deadline
        replica = s.variable == REPLICA  # waited for in the background, said by replicas.py
        delay, attempt = 0.25, 1
        refused_since: float | None = None  # when the current run of refusals began
        while True:
            started = time.monotonic()
            remaining = deadline - started
            kwargs["timeout"] = max(0.1, min(ATTEMPT_TIMEOUT, remaining))
            kwargs["direct_tls"] = s.direct_tls
            if self.statement_cache_off:
                kwargs["statement_cache_size"] = 0
            try:
                connection = await asyncpg.connect(*args, **kwargs)
            except Exception as exc:
                # Direct TLS by default (a Neon host): a handshake broken off or never answered
                # (a middlebox that drops it) gets the standard negotiation instead, once.
                if s.direct_tls_fallback and (is_direct_tls_failure(exc, s) or isinstance(
                        exc, (TimeoutError, asyncio.TimeoutError))):
                    self.fall_back(exc)
                    continue
                if not is_not_ready(exc, s):
                    raise DatabaseError(explain_connect_error(exc, s)) from exc
                reason = failure_reason(exc)
                give_up, limit = deadline, s.connect_deadline
                if is_slots_full(exc):  # 53300: no free slot
                    held = self.pool.get_size() if self.pool is not None else 0
                    if held:  # serve from the connections held: pool.py waits for one
                        from tortoise_neon.pool import SlotsFull

                        raise SlotsFull(explain_slots_full(exc, s, held=held)) from exc
                    limit = min(SLOTS_WAIT, s.connect_deadline)
                    give_up = min(deadline, begun + limit)
                elif reason == "connection refused":
                    refused_since = started if refused_since is None else refused_since
                    # A replica that refuses is down: its reads go to the primary (replicas.py)
                    limit = 0 if replica else min(REFUSED_FOR, s.connect_deadline)
                    give_up = min(deadline, refused_since + limit)
                else:
                    refused_since = None
                remaining = give_up - time.monotonic()
                if remaining <= 0.05:
                    if is_slots_full(exc):
                        raise DatabaseError(explain_slots_full(exc, s, waited=limit)) from exc
                    raise DatabaseError(explain_gave_up(exc, s, attempt, limit)) from exc
                if attempt == 1 and not replica and not is_slots_full(exc):
                    log.warning("Database at %s not ready (%s); retrying for up to %.0f s",
                                s.address, reason, remaining)
                wait = min(delay, 4.0, remaining) * random.uniform(0.5, 1.0)  # backoff, jitter
                await asyncio.sleep(wait)
                delay, attempt = delay * 2, attempt + 1
            else:
                for listener in CONNECTED:
                    listener()
                if self.announce:
                    self.announce = False  # once: the pool's later connections say nothing
                    log.warning("%s", s.describe())
                return connection

    def fall_back(self, exc: BaseException) -> None:
        """Direct TLS, chosen by default for a Neon host, failed: use the standard negotiation
        from now on (for this connection and the pool's later ones), and say so."""
        s = self.settings
        s.direct_tls = s.direct_tls_fallback = False
        log.warning("Direct TLS failed at %s (%s): using the standard TLS negotiation instead "
                    "(add sslnegotiation=postgres to DATABASE_URL to skip the attempt)",
                    s.host, failure_reason(exc))
