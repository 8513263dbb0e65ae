"""One read replica (DATABASE_URL_REPLICA): its pool, and whether reads may go to it now (where
each read goes is routing.py; the design: docs/replicas-and-workers.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from tortoise_neon.config import pool_options
from tortoise_neon.connecting import ConnectPolicy, is_not_ready
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.errors import DatabaseError, failure_reason
from tortoise_neon.pool import SlotAwarePool, create_pool

import asyncpg

log = logging.getLogger(__name__)

RETRY_AFTER = 30.0  # seconds a replica that failed (down, waking, far behind) is left alone
FAR_BEHIND = 30.0  # a replica that has not replayed a write this many seconds old lags far
# A replica that refuses is down: its reads go to the primary, and the log says so once (below)
GIVE_UP_AT_ONCE = ConnectPolicy(refused_for=0, say_not_ready=False)


class ReadOnPrimary(Exception):
    """The read runs on the primary: no replica may serve it now (down, waking, behind, busy, or
    it refused the statement)."""


def lsn(position: str) -> int:
    """A WAL position, ``16/B374D848``, as a number that compares as the server's pg_lsn."""
    high, _, low = position.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class Write:
    """A write reads must see: the primary's WAL position after it (lsn()), when the primary was
    there (time.time()), and whether it may judge a replica (signed, or this process's own)."""

    position: int = 0
    at: float = 0.0
    trusted: bool = True


class Replica:
    """One read replica: its pool (opened on first use, no floor) and whether it may be used."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.name = settings.host
        self.pool: SlotAwarePool | None = None
        self.down_until = 0.0  # time.monotonic(): left alone until then
        self.opening: asyncio.Task[None] | None = None
        self.expiring: asyncio.Task[None] | None = None
        self.said_down = False  # the log said it is not used, and has not said it is back
        self.replayed = 0  # the furthest position it was seen to have replayed (lsn())
        self.behind_at = float("-inf")  # time.monotonic() of the last check that found it behind

    def usable(self) -> bool:
        """True when a read can go here now: up, and holding a connection (so it is awake). A
        replica that holds none opens one in the background; this read goes to the primary."""
        if time.monotonic() < self.down_until:
            return False
        if self.pool is not None and self.pool.get_size():
            self._back()
            return True
        if self.opening is None:
            self.opening = asyncio.get_running_loop().create_task(self._open())
        return False

    async def _open(self) -> None:
        try:
            if self.pool is None:
                self.pool = await create_pool(**pool_options(self.settings, policy=GIVE_UP_AT_ONCE))
            async with self.pool.acquire():
                pass  # one connection, kept in the pool: reads use it from now on
            self._back()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, DatabaseError,
                asyncio.TimeoutError) as exc:
            self.failed(exc)
        finally:
            self.opening = None

    def _back(self) -> None:
        if self.said_down:
            self.said_down = False
            log.warning("Read replica %s is back: reads go to it again", self.name)

    def failed(self, why: BaseException | str) -> None:
        """Leave the replica alone for RETRY_AFTER seconds, after an error (``why``) its
        connections too; one log line until it is back."""
        self.down_until = time.monotonic() + RETRY_AFTER
        self.replayed = 0  # it may come back as another server: check it again
        if self.pool is not None and not isinstance(why, str):  # its connections may be gone
            self.expiring = asyncio.get_running_loop().create_task(self.pool.expire_connections())
        if not self.said_down:
            self.said_down = True
            reason = why if isinstance(why, str) else _reason(why, self.settings)
            log.warning("Read replica %s not used (%s): reads go to the primary; trying it "
                        "again in %.0f s", self.name, reason, RETRY_AFTER)

    def found_behind(self, write: Write) -> None:
        """It lacks ``write``: left alone if that is FAR_BEHIND old and trusted (an unsigned
        cookie's steers only its client)."""
        age = time.time() - write.at
        if age > FAR_BEHIND and write.trusted:
            self.failed(f"it has not replayed a write made {age:.0f} s ago")

    async def close(self) -> None:
        if self.opening is not None:
            self.opening.cancel()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 10)
            except (TimeoutError, asyncio.TimeoutError):
                self.pool.terminate()
            self.pool = None


def _reason(exc: BaseException, settings: DatabaseSettings) -> str:
    """A few words for why the replica failed: what waiting could fix ("connection refused",
    "timed out", 57P03) as it is; what the user must fix (a wrong password) as its line."""
    cause = exc.__cause__ if isinstance(exc, DatabaseError) and exc.__cause__ else exc
    if isinstance(exc, DatabaseError) and not is_not_ready(cause, settings):
        return str(exc)
    return failure_reason(cause)
