"""asyncpg's pool, for a compute out of connection slots (SQLSTATE 53300): a pool that holds
connections waits for one of its own instead of failing (docs/replicas-and-workers.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from tortoise_neon.errors import DatabaseError

import asyncpg
from asyncpg.pool import Pool

log = logging.getLogger(__name__)

FULL_FOR = 1.0  # seconds without trying to open another connection after the compute said full


class SlotsFull(DatabaseError):
    """The compute has no free slot, and this pool holds connections: wait for one of them."""


class SlotAwarePool(Pool):  # type: ignore[misc]
    """asyncpg's pool that waits for its own connections when the compute is full."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full_until = 0.0  # time.monotonic() until which no new connection is tried
        self.released = asyncio.Condition()

    def _idle_connection_queued(self) -> bool:
        queued = getattr(self._queue, "_queue", ())  # asyncio.LifoQueue's list of holders
        return any(holder.is_connected() for holder in queued)

    async def _acquire(self, timeout: float | None) -> Any:
        while True:
            if time.monotonic() < self.full_until and not self._idle_connection_queued() \
                    and self.get_size():
                async with self.released:  # a new connection would be refused: wait for one
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(self.released.wait(), FULL_FOR)
                continue
            try:
                return await super()._acquire(timeout)
            except SlotsFull as exc:
                if not self.full_until:  # the first time: say it
                    log.warning("%s", exc)
                self.full_until = time.monotonic() + FULL_FOR

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        await super().release(connection, timeout=timeout)
        async with self.released:
            self.released.notify_all()


async def create_pool(**kwargs: Any) -> SlotAwarePool:
    """``asyncpg.create_pool`` with this pool; the connect hook learns which pool it fills."""
    defaults = {"max_queries": 50000, "max_inactive_connection_lifetime": 300.0, "loop": None,
                "connection_class": asyncpg.Connection, "record_class": asyncpg.Record, "min_size": 0}
    pool = SlotAwarePool(None, **{**defaults, **kwargs})
    if hasattr(kwargs.get("connect"), "pool"):  # a RetryingConnect
        kwargs["connect"].pool = pool
    await pool
    return pool
