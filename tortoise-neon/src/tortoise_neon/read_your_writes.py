"""Read your writes across processes: the ``db_wal`` cookie and ``db-wal`` header, and the ASGI
middleware that reads and sets them (docs/replicas-and-workers.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from typing import Any

from tortoise_neon.errors import DatabaseError, failure_reason
from tortoise_neon.replicas import Write, lsn
from tortoise_neon.routing import ReadRouter, RoutingState, primary, request_state

import asyncpg
from tortoise import connections
from tortoise.exceptions import BaseORMException

log = logging.getLogger(__name__)

COOKIE = "db_wal"  # the primary's WAL position after the client's last write, signed
HEADER = "db-wal"  # the same value in a response header, which a client may send back
SECRET = "READ_YOUR_WRITES_SECRET"  # the signing key, the same for every worker
SECRET_MIN_LENGTH = 32
COOKIE_MAX_AGE = 300  # seconds: an older cookie is ignored (and the browser drops it then)
CLOCK_SKEW = 60  # seconds a worker's clock may be ahead of another's (a cookie "from the future")
# <LSN>.<unix time>[.<HMAC-SHA256, 32 hex digits>]: ASCII only, whatever the client sends
COOKIE_FORMAT = re.compile(
    r"([0-9A-F]{1,8}/[0-9A-F]{1,8})\.([0-9]{1,12})(?:\.([0-9a-f]{32}))?", re.ASCII)
# The end of the primary's last WAL record, which a replica reports once it has replayed it. The
# insert position is that, except when the record ended a page: then it is past the next page's
# header (24 bytes, 40 at a segment's start), which no replica reports before another record.
PRIMARY_POSITION = (
    "SELECT (p - CASE WHEN b % pg_size_bytes(current_setting('wal_segment_size')) = 40 THEN 40 "
    "WHEN b % current_setting('wal_block_size')::int = 24 THEN 24 ELSE 0 END)::text "
    "FROM pg_current_wal_insert_lsn() AS p, LATERAL (SELECT p - '0/0'::pg_lsn AS b) AS w")


def cookie_key() -> bytes | None:
    """READ_YOUR_WRITES_SECRET (the environment or ``.env``), or None: the cookie is unsigned.
    Nothing a client receives derives from the database's credentials."""
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


def _signature(key: bytes | None, text: str) -> str:
    if key is None:
        return ""
    message = f"{COOKIE}\0{text}".encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def cookie_value(key: bytes | None, position: str, written: int | None = None) -> str:
    """``<position>.<time>``, and ``.<signature>`` when there is a key."""
    text = f"{position}.{int(time.time()) if written is None else written}"
    signature = _signature(key, text)
    return f"{text}.{signature}" if signature else text


def take_position(key: bytes | None, value: str, state: RoutingState) -> bool:
    """The client's last write, from its cookie or header, into ``state``: False (as if absent)
    for one that does not parse, does not verify, or is older than COOKIE_MAX_AGE."""
    found = COOKIE_FORMAT.fullmatch(value)
    if found is None:
        return False
    position, written, signature = found.groups()
    age = time.time() - int(written)
    if not -CLOCK_SKEW <= age <= COOKIE_MAX_AGE:
        return False
    valid = hmac.compare_digest(signature or "", _signature(key, f"{position}.{written}"))
    if valid:
        state.must_see = Write(lsn(position), float(written), trusted=key is not None)
    return valid


def take_cookie(key: bytes | None, value: str, state: RoutingState) -> bool:
    """``take_position`` for the cookie: one that is not taken is marked to be cleared."""
    state.bad_cookie = not take_position(key, value, state)
    return not state.bad_cookie


class ReadYourWrites:
    """ASGI middleware: a client that wrote reads its write in its next requests. Without a
    replica it only gives each request its routing state (no round trip)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = RoutingState()
        token = request_state.set(state)
        client = _client()
        router: ReadRouter | None = getattr(client, "router", None)
        if router is not None:
            headers, cookies = _sent(scope)
            # The header (a client without cookies), or else the first cookie that verifies (a
            # parent domain's may be planted beside this host's).
            if not any(take_position(router.key, value, state) for value in headers):
                for value in cookies:
                    if take_cookie(router.key, value, state):
                        break
        secure = scope.get("scheme") == "https"

        async def send_with_position(message: Any) -> None:
            if message["type"] == "http.response.start" and router is not None:
                headers = await _position_headers(client, router, state,
                                                  message.get("status", 500), secure)
                if headers:
                    message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_position)
        finally:
            request_state.reset(token)


def _client() -> Any:
    try:
        return connections.get("default")
    except (BaseORMException, RuntimeError, KeyError):  # not initialised: no replicas either
        return None


def _sent(scope: Any) -> tuple[list[str], list[str]]:
    """The values of the request's db-wal headers, and of its db_wal cookies."""
    headers, cookies = [], []
    for key, value in scope.get("headers", []):
        text = value.decode("latin-1")
        if key.lower() == HEADER.encode():
            headers.append(text.strip())
        elif key == b"cookie":
            for part in text.split(";"):
                name, _, cookie = part.strip().partition("=")
                if name == COOKIE and cookie:
                    cookies.append(cookie)
    return headers, cookies


async def _position_headers(client: Any, router: ReadRouter, state: RoutingState, status: int,
                            secure: bool) -> list[tuple[bytes, bytes]]:
    """After a request that wrote and succeeded: the primary's WAL position, kept as this
    process's latest write, in the cookie and the header. Else the cookie cleared: bad, or replayed."""
    attributes = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    if state.wrote and status < 400:
        try:
            with primary():
                async with client.acquire_connection() as connection:
                    position = await connection.fetchval(PRIMARY_POSITION)
        except (asyncpg.PostgresError, OSError, DatabaseError, asyncio.TimeoutError) as exc:
            log.warning("Could not read the primary's WAL position after a write (%s): this "
                        "client's next reads may come from a replica", failure_reason(exc))
            return []
        router.remember_write(position)
        value = cookie_value(router.key, position)
        cookie = f"{COOKIE}={value}; Max-Age={COOKIE_MAX_AGE}; {attributes}"
        return [(b"set-cookie", cookie.encode()), (HEADER.encode(), value.encode())]
    if state.bad_cookie or (state.must_see is not None and state.caught_up):
        cleared = f"{COOKIE}=; Max-Age=0; {attributes}"  # the replica has it: nothing to carry
        return [(b"set-cookie", cleared.encode())]
    return []
