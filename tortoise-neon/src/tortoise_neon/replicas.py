"""Read replicas (DATABASE_URL_REPLICA): reads go there, and nobody reads behind their own write.

Routing (``client.py`` asks ``Replicas.for_read()`` before each statement):

- a read outside a transaction (a SELECT that locks nothing) goes to a replica;
- a write, ``select_for_update``, and every statement in a transaction go to the primary, and so
  does every read that follows a write in the same task: a script's, or a request's;
- within one process, no read goes to a replica that has not replayed that process's latest
  write: after a request that wrote, ``ReadYourWrites`` (which ``answer_503_when_down``
  installs) reads the primary's WAL position and keeps it (``Replicas.latest``); every later
  request's reads go to a replica only once it has replayed that far, so any client, with
  cookies or without, reads its own write when the same process serves it;
- across processes (``--workers N``, several instances), the response of a request that wrote
  carries that position in a cookie and in a ``db-wal`` header, and a request that sends either
  back reads from a replica only once it has replayed that far too. The position is signed with
  READ_YOUR_WRITES_SECRET when it is set (never with anything derived from the database's
  credentials); one that does not parse, verify, or is older than COOKIE_MAX_AGE is ignored
  (and the cookie cleared): that request's reads go where they would without it.

The check is the replica's ``pg_last_wal_replay_lsn()``: one round trip, at most once per
request and, while the replica is behind, at most once per RECHECK seconds per process (the
requests in between read from the primary). The position a replica has replayed is remembered,
so once it has caught up, reads cost nothing more. When a replica has caught up, the cookie is
cleared.

A replica that is down, waking or far behind costs no request: the read runs on the primary
(one log line), and the replica is tried again ``RETRY_AFTER`` seconds later. An idle app opens
no replica connection: the first read opens one in the background, on the primary meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from tortoise_neon.config import pool_options
from tortoise_neon.connecting import ConnectPolicy, is_not_ready
from tortoise_neon.database_settings import DatabaseSettings
from tortoise_neon.errors import LOST, DatabaseError, failure_reason
from tortoise_neon.pool import SlotAwarePool, create_pool

import asyncpg

log = logging.getLogger(__name__)

RETRY_AFTER = 30.0  # seconds a replica that failed (down, waking, far behind) is left alone
FAR_BEHIND = 30.0  # a replica that has not replayed a write this many seconds old lags far
ACQUIRE_WAIT = 5.0  # seconds a read waits for a replica connection before using the primary
COOKIE = "db_wal"  # the primary's WAL position after the client's last write, signed
HEADER = "db-wal"  # the same value in a response header, which a client may send back
RECHECK = 0.1  # seconds: a replica found behind is asked again after this; the primary meanwhile
# The cookie's signing key: a secret meant for it, the same for every worker (never derived from
# the database's password). Unset: the cookie is unsigned (docs/replicas-and-workers.md).
SECRET = "READ_YOUR_WRITES_SECRET"
SECRET_MIN_LENGTH = 32
COOKIE_MAX_AGE = 300  # seconds: an older cookie is ignored (and the browser drops it then)
CLOCK_SKEW = 60  # seconds a worker's clock may be ahead of another's (a cookie "from the future")
# <LSN>.<unix time>[.<HMAC-SHA256, 32 hex digits>]: ASCII only, whatever the client sends
COOKIE_FORMAT = re.compile(
    r"([0-9A-F]{1,8}/[0-9A-F]{1,8})\.([0-9]{1,12})(?:\.([0-9a-f]{32}))?", re.ASCII)
LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)
# How far the replica has replayed (NULL: a server that is not a standby has everything).
REPLAYED = "SELECT pg_last_wal_replay_lsn()::text"
EVERYTHING = 1 << 64  # beyond any WAL position
PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()::text"


@dataclass
class Reads:
    """Where one task's reads may go: a script's, or one web request's."""

    wrote: bool = False  # it wrote: its reads go to the primary from now on
    must_see: str | None = None  # a WAL position from the client's cookie or db-wal header
    written_at: float = 0.0  # when the primary was at that position (time.time())
    replica: Replica | None = None  # the replica this request reads from (checked once)
    caught_up: bool | None = None  # whether that replica has replayed ``needs``
    trusted: bool = False  # ``must_see`` was signed: it may judge the replica
    bad_cookie: bool = False  # a cookie that did not parse, verify or was too old: cleared
    # What the replica must have replayed: the later of ``must_see`` and the process's latest
    # write when the request first read (0: nothing); when, and whether it may judge the replica.
    needs: int | None = None
    needs_written_at: float = 0.0
    needs_trusted: bool = False


_reads: ContextVar[Reads | None] = ContextVar("database_reads", default=None)
_pinned: ContextVar[bool] = ContextVar("database_primary", default=False)


def current() -> Reads:
    """This task's routing state, created on first use (a script's task keeps it throughout)."""
    reads = _reads.get()
    if reads is None:
        reads = Reads()
        _reads.set(reads)
    return reads


@contextmanager
def primary() -> Iterator[None]:
    """Every read in the block goes to the primary: ``with tortoise_neon.primary(): ...`` (what
    Prisma calls ``$primary()``), for a read that must see another client's latest write."""
    token = _pinned.set(True)
    try:
        yield
    finally:
        _pinned.reset(token)


def lsn(position: str) -> int:
    """A WAL position, ``16/B374D848``, as a number that compares as the server's pg_lsn."""
    high, _, low = position.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def is_locking(query: str) -> bool:
    """``SELECT ... FOR UPDATE`` (``select_for_update``) and the like: the primary's."""
    return bool(LOCKING.search(query))


# A replica that refuses is down: its reads go to the primary, and the log says so once (below)
GIVE_UP_AT_ONCE = ConnectPolicy(refused_for=0, say_not_ready=False)


class Replica:
    """One read replica: its pool (opened on first use, no floor) and whether it may be used."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.pool: SlotAwarePool | None = None
        self.down_until = 0.0  # time.monotonic(): left alone until then
        self.opening: asyncio.Task[None] | None = None
        self.expiring: asyncio.Task[None] | None = None
        self.said_down = False  # the log said it is not used, and has not said it is back
        self.replayed = 0  # the furthest position it was seen to have replayed (lsn())
        self.behind_at = float("-inf")  # time.monotonic() of the last check that found it behind

    @property
    def name(self) -> str:
        return self.settings.host

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

    def failed(self, exc: BaseException, why: str | None = None) -> None:
        """Leave the replica alone for RETRY_AFTER seconds; one log line until it is back."""
        self.down_until = time.monotonic() + RETRY_AFTER
        self.replayed = 0  # it may come back as another server: check it again
        if self.pool is not None and why is None:  # its connections may be gone too
            self.expiring = asyncio.get_running_loop().create_task(self.pool.expire_connections())
        if not self.said_down:
            self.said_down = True
            reason = why or _reason(exc, self.settings)
            log.warning("Read replica %s not used (%s): reads go to the primary; trying it "
                        "again in %.0f s", self.name, reason, RETRY_AFTER)

    def behind(self, reads: Reads) -> None:
        """It has not replayed what ``reads`` needs: left alone if that write is FAR_BEHIND old.
        Only a signed position, or the process's own, may put it aside for every client: an
        unsigned one is the client's word, and could only choose where its own reads go."""
        age = time.time() - reads.needs_written_at
        if age > FAR_BEHIND and reads.needs_trusted:
            self.failed(Behind(), f"it has not replayed a write made {age:.0f} s ago")

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


class Behind(Exception):
    """Not this read, not now: the replica has not replayed the client's last write yet, or
    every connection of its pool stayed busy for ACQUIRE_WAIT seconds. Read from the primary."""


class ReplicaConnection:
    """A connection of the replica's pool, for one read; first, once per request that needs
    it (``Replicas.for_read``), the check that the replica has replayed the position."""

    def __init__(self, replica: Replica, reads: Reads) -> None:
        self.replica, self.reads = replica, reads
        self.connection: Any = None

    async def __aenter__(self) -> Any:
        pool = self.replica.pool
        assert pool is not None
        try:
            self.connection = await asyncio.wait_for(pool.acquire(), ACQUIRE_WAIT)
        except (TimeoutError, asyncio.TimeoutError):
            if pool.get_size():  # busy, not down: this read goes to the primary
                raise Behind from None
            raise
        reads, replica = self.reads, self.replica
        if reads.caught_up is None and reads.needs:
            replayed = await self.connection.fetchval(REPLAYED)
            replica.replayed = max(replica.replayed,
                                   EVERYTHING if replayed is None else lsn(replayed))
            reads.caught_up = replica.replayed >= reads.needs
            if not reads.caught_up:
                replica.behind_at = time.monotonic()
                replica.behind(reads)
        if reads.caught_up is False:
            await self._release()
            raise Behind
        return self.connection

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, LOST) and self.connection is not None:
            self.connection.terminate()
        await self._release()

    async def _release(self) -> None:
        if self.connection is not None and self.replica.pool is not None:
            connection, self.connection = self.connection, None
            await self.replica.pool.release(connection)


class Replicas:
    """The replicas of one client (DATABASE_URL_REPLICA), and where each read goes."""

    def __init__(self, settings: list[DatabaseSettings], key: bytes | None) -> None:
        self.replicas = [Replica(s) for s in settings]
        self._turns = itertools.cycle(self.replicas)
        self.key = key  # signs the cookie (READ_YOUR_WRITES_SECRET); None: the cookie is unsigned
        self.served: Counter[str] = Counter()  # reads served: "replica", "primary"
        # This process's latest write (a request's that succeeded): its WAL position (lsn()),
        # and when the primary was there (time.time()). No read goes to a replica behind it.
        self.latest = 0
        self.latest_at = 0.0
        self.checks = 0  # replica checks sent (pg_last_wal_replay_lsn()), for tests and the bench

    def for_read(self) -> tuple[Replica, Reads] | None:
        """The replica this read goes to, or None for the primary."""
        reads = current()
        if reads.wrote or _pinned.get() or reads.caught_up is False:
            return None
        if reads.replica is not None and reads.replica.usable():
            replica = reads.replica
        else:
            for _ in self.replicas:
                replica = next(self._turns)
                if replica.usable():
                    if reads.replica is not None:  # another replica: check it again
                        reads.caught_up = None
                    reads.replica = replica
                    break
            else:
                return None
        if reads.caught_up is None:
            if reads.needs is None:  # the request's first read: what it must see, from now on
                self._needs(reads)
            if not reads.needs or replica.replayed >= reads.needs:
                reads.caught_up = True  # known without asking: no round trip
            elif time.monotonic() - replica.behind_at < RECHECK:
                reads.caught_up = False  # found behind a moment ago: the primary, no round trip
                replica.behind(reads)
                return None
            else:
                self.checks += 1  # ReplicaConnection asks the replica, once
        return replica, reads

    def _needs(self, reads: Reads) -> None:
        """The later of the client's position (cookie or header) and the process's latest write."""
        needs, written_at, trusted = self.latest, self.latest_at, True
        if reads.must_see is not None and lsn(reads.must_see) > needs:
            needs, written_at, trusted = lsn(reads.must_see), reads.written_at, reads.trusted
        reads.needs, reads.needs_written_at, reads.needs_trusted = needs, written_at, trusted

    def wrote(self) -> None:
        current().wrote = True

    def written(self, position: str) -> None:
        """A request's write committed, and the primary was at ``position`` after it: no read in
        this process goes to a replica that has not replayed that far."""
        if lsn(position) > self.latest:
            self.latest, self.latest_at = lsn(position), time.time()

    # --- the cookie: the primary's WAL position after a client's write ------------------------

    def sign(self, text: str) -> str:
        """The HMAC of the cookie's text, keyed by READ_YOUR_WRITES_SECRET ("" when unsigned)."""
        if self.key is None:
            return ""
        message = f"{COOKIE}\0{text}".encode("ascii")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    def cookie_value(self, position: str, written: int | None = None) -> str:
        """``<position>.<time>``, and ``.<signature>`` when there is a secret: nothing in it
        comes from the database's credentials."""
        text = f"{position}.{int(time.time()) if written is None else written}"
        signature = self.sign(text)
        return f"{text}.{signature}" if signature else text

    def read_position(self, value: str, reads: Reads) -> bool:
        """The client's last write, from its cookie or its db-wal header: False for one that
        does not parse (any non-ASCII byte), does not verify, or is older than COOKIE_MAX_AGE,
        which is as if absent: never an error, and never a reason to read from the primary."""
        found = COOKIE_FORMAT.fullmatch(value)
        if found is None:
            return False
        position, written, signature = found.groups()
        age = time.time() - int(written)
        if not -CLOCK_SKEW <= age <= COOKIE_MAX_AGE:
            return False
        if self.key is None:
            valid = signature is None
        else:
            valid = signature is not None and hmac.compare_digest(
                signature.encode("ascii"), self.sign(f"{position}.{written}").encode("ascii"))
        if valid:
            reads.must_see, reads.written_at = position, float(written)
            reads.trusted = self.key is not None
        return valid

    def read_cookie(self, value: str, reads: Reads) -> bool:
        """``read_position`` for the cookie: one that is not taken is marked to be cleared."""
        taken = self.read_position(value, reads)
        reads.bad_cookie = not taken
        return taken

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()


def cookie_key() -> bytes | None:
    """The cookie's signing key: READ_YOUR_WRITES_SECRET (the environment or ``.env``, read as
    DATABASE_URL is), which every worker must share; None when it is unset (the cookie is then
    unsigned). Nothing a client receives derives from the database's credentials."""
    from tortoise_neon.environment import load_database_url

    secret = load_database_url(name=SECRET)
    if secret is None:
        return None
    if len(secret) < SECRET_MIN_LENGTH:
        raise DatabaseError(
            f"{SECRET} has {len(secret)} characters: give it {SECRET_MIN_LENGTH} or more random "
            "ones, the same for every worker (python -c \"import secrets; "
            "print(secrets.token_urlsafe(32))\"), or unset it for an unsigned cookie")
    return secret.encode()


class ReadYourWrites:
    """ASGI middleware: a client that wrote reads its write in its next requests.

    With no replica configured it only sets up the request's routing state (no round trip).
    After a request that wrote and succeeded, the response carries the primary's WAL position
    (one round trip on the primary); a later request from that client reads from a replica
    only once the replica has replayed that far, and the cookie is cleared then.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reads = Reads()
        token = _reads.set(reads)
        replicas = _replicas_in_use()
        # The header, sent back by a client without cookies, or else the cookie (several: a
        # parent domain's, planted beside this host's): the first that verifies.
        if replicas is not None and not any(
                replicas.read_position(value, reads) for value in _headers(scope, HEADER)):
            for value in _cookies(scope, COOKIE):
                if replicas.read_cookie(value, reads):
                    break
        secure = scope.get("scheme") == "https"

        async def send_with_position(message: Any) -> None:
            if message["type"] == "http.response.start" and replicas is not None:
                headers = await _position_headers(replicas, reads, message.get("status", 500),
                                                  secure)
                if headers:
                    message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_position)
        finally:
            _reads.reset(token)


def _replicas_in_use() -> Replicas | None:
    from tortoise import connections
    from tortoise.exceptions import BaseORMException

    try:
        client = connections.get("default")
    except (BaseORMException, RuntimeError, KeyError):  # not initialised: no replicas either
        return None
    return getattr(client, "replicas", None)


def _headers(scope: Any, name: str) -> list[str]:
    """The request's headers named ``name`` (not empty), in order."""
    key = name.encode("ascii")
    return [value.decode("latin-1").strip() for k, value in scope.get("headers", [])
            if k.lower() == key and value.strip()]


def _cookies(scope: Any, name: str) -> list[str]:
    """The request's cookies named ``name`` (not empty), in order."""
    values = []
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                cookie_name, _, cookie_value = part.strip().partition("=")
                if cookie_name == name and cookie_value:
                    values.append(cookie_value)
    return values


async def _position_headers(replicas: Replicas, reads: Reads, status: int,
                            secure: bool = False) -> list[tuple[bytes, bytes]]:
    """After a request that wrote and succeeded: the primary's WAL position, kept as this
    process's latest write and sent in the cookie and the db-wal header. Else the cookie's
    clearing, when it is bad or the replica has caught up."""
    attributes = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    if reads.wrote and status < 400:
        from tortoise import connections

        client = connections.get("default")
        try:
            with primary():
                async with client.acquire_connection() as connection:
                    position = await connection.fetchval(PRIMARY_POSITION)
        except (asyncpg.PostgresError, OSError, DatabaseError, asyncio.TimeoutError) as exc:
            log.warning("Could not read the primary's WAL position after a write (%s): this "
                        "client's next reads may come from a replica", failure_reason(exc))
            return []
        replicas.written(position)
        value = replicas.cookie_value(position)
        cookie = f"{COOKIE}={value}; Max-Age={COOKIE_MAX_AGE}; {attributes}"
        return [(b"set-cookie", cookie.encode()), (HEADER.encode(), value.encode())]
    if reads.bad_cookie or (reads.must_see is not None and reads.caught_up):
        cleared = f"{COOKIE}=; Max-Age=0; {attributes}"  # the replica has it: nothing to carry
        return [(b"set-cookie", cleared.encode())]
    return []


def served(client: Any) -> Counter[str]:
    """Reads served so far by the replicas and by the primary (for tests and the bench)."""
    replicas = getattr(client, "replicas", None)
    return replicas.served if replicas is not None else Counter()


