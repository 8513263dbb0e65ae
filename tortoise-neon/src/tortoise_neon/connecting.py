"""Opening a connection: retried with backoff while the server is not ready, within a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tortoise_neon.connect_errors import (
    explain_connect_error,
    explain_gave_up,
    explain_slots_full,
    is_direct_tls_failure,
    is_slots_full,
    neon_failure,
)
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.errors import DatabaseError, failure_reason
from tortoise_neon.pool import SlotsFull

import asyncpg

log = logging.getLogger(__name__)  # "tortoise_neon.connecting": the scripts show it on stderr

ATTEMPT_TIMEOUT = 10.0  # seconds for one attempt: a host that accepts and never answers
REFUSED_FOR = 5.0  # seconds of "connection refused" (Neon's proxy always listens) before giving up
SLOTS_WAIT = 5.0  # seconds to wait for a free slot (53300) when this process holds no connection

NOT_READY = (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,  # starting, full
             asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError, TimeoutError,
             asyncio.TimeoutError)

# Listeners called after each connection made (script.py holds the CLI's output until the first)
on_connected: list[Callable[[], None]] = []


@dataclass(frozen=True)
class ConnectPolicy:
    """How long a refusal is waited for, and whether the "not ready; retrying" line is logged."""

    refused_for: float = REFUSED_FOR
    say_not_ready: bool = True


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
    # refused, reset: waking up, restarting; but waiting will not give a server TLS
    return "rejected SSL upgrade" not in str(exc)


class RetryingConnect:
    """The pool's ``connect`` hook: asyncpg's ``connect``, retried with backoff while the server
    is not ready (a Neon compute waking from scale-to-zero, a reconnect later on)."""

    def __init__(self, settings: DatabaseSettings, *, policy: ConnectPolicy | None = None,
                 announce: bool = False) -> None:
        self.settings = settings  # after a direct-TLS fall back: a copy without direct TLS
        self.policy = policy or ConnectPolicy()
        self.announce = announce  # log the first connection's describe() line
        self.statement_cache_off = False  # set by client.py when a pooler loses statements
        self.pool: Any = None  # the pool this fills (pool.py sets it)

    async def __call__(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        begun = time.monotonic()
        deadline = begun + self.settings.connect_deadline
        delay, attempt = 0.25, 1
        refused_since: float | None = None  # when the current run of refusals began
        slowest = 0.0  # seconds the slowest answer took: an attempt gets twice that, or none
        while True:
            s = self.settings
            started = time.monotonic()
            kwargs["timeout"] = max(0.1, min(ATTEMPT_TIMEOUT, deadline - started))
            kwargs["direct_tls"] = s.direct_tls
            if self.statement_cache_off:
                kwargs["statement_cache_size"] = 0
            try:
                connection = await asyncpg.connect(*args, **kwargs)
            except Exception as exc:
                timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError))  # no answer
                if s.direct_tls_fallback and isinstance(exc, asyncpg.PostgresError):
                    # the server answered over direct TLS: a later timeout is not direct TLS's
                    self.settings = s = dataclasses.replace(s, direct_tls_fallback=False)
                # direct TLS by default (a Neon host), broken off or never answered
                if s.direct_tls_fallback and (is_direct_tls_failure(exc, s) or timed_out):
                    self.fall_back(exc)
                    continue
                if not is_not_ready(exc, s):
                    raise DatabaseError(explain_connect_error(exc, s)) from exc
                reason, full = failure_reason(exc), is_slots_full(exc)
                since, limit = begun, s.connect_deadline  # waiting from when, for how long
                if full:  # 53300: no free slot
                    held = self.pool.get_size() if self.pool is not None else 0
                    if held:  # serve from the connections held: pool.py waits for one
                        raise SlotsFull(explain_slots_full(exc, s, held=held)) from exc
                    limit = min(SLOTS_WAIT, limit)
                elif reason == "connection refused":
                    refused_since = started if refused_since is None else refused_since
                    since, limit = refused_since, min(self.policy.refused_for, limit)
                else:
                    refused_since = None
                if not timed_out:
                    slowest = max(slowest, time.monotonic() - started)
                remaining = min(deadline, since + limit) - time.monotonic()
                # No attempt the deadline would cut short: its "timed out" would hide this answer
                fair = max(0.1, 2 * slowest)  # seconds the next attempt gets at least
                if remaining - fair <= 0.05:
                    if full:
                        raise DatabaseError(explain_slots_full(exc, s, waited=limit)) from exc
                    raise DatabaseError(explain_gave_up(exc, s, attempt, limit)) from exc
                if attempt == 1 and self.policy.say_not_ready and not full:
                    log.warning("Database at %s not ready (%s); retrying for up to %.0f s",
                                s.address, reason, remaining)
                await asyncio.sleep(min(delay, 4.0, remaining - fair) * random.uniform(0.5, 1.0))
                delay, attempt = delay * 2, attempt + 1
            else:
                for listener in on_connected:
                    listener()
                if self.announce:
                    self.announce = False  # once: the pool's later connections say nothing
                    log.warning("%s", s.describe())
                return connection

    def fall_back(self, exc: BaseException) -> None:
        """Direct TLS failed: the standard negotiation from now on, said once."""
        s = self.settings
        self.settings = dataclasses.replace(s, direct_tls=False, direct_tls_fallback=False)
        log.warning("Direct TLS failed at %s (%s): using the standard TLS negotiation instead "
                    "(add sslnegotiation=postgres to %s to skip the attempt)",
                    s.host, failure_reason(exc), s.variable)
