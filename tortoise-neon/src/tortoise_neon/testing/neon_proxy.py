"""A Neon-faithful proxy for the tests: Neon's proxy as a client meets it, before a test server.

Written from reading Neon's proxy (github.com/neondatabase/neon, ``proxy/src``); no code copied.
Standard library only; it runs on its own event loop in a background thread (``with NeonProxy(...)
as proxy``), listening on 127.0.0.1.

Faithful to Neon:
- TLS only: after an SSLRequest, or direct TLS (first byte 0x16). A ClientHello offering ALPN
  without ``postgresql`` gets a ``no_application_protocol`` alert; no ALPN is fine. A
  StartupMessage in the clear gets ``connection is insecure (try using `sslmode=require`)``.
- Every error before ReadyForQuery is one ErrorResponse with only S=ERROR, C=XX000 and M, then
  the proxy hangs up. The compute's own errors (``database "x" does not exist``) are re-sent
  that way: message text only.
- The endpoint id is the first label of the SNI host name (when the rest is the certificate's
  domain), or ``endpoint=<id>`` / ``project=<id>`` in the startup ``options``; the two must agree.
  ``-pooler`` is removed when the endpoint is looked up. With neither, the proxy asks for a
  cleartext password and accepts ``endpoint=<id>;<password>`` (Neon's "password hack"), else
  sends "Endpoint ID is not specified. ...".
- The proxy authenticates the client itself (SCRAM-SHA-256). An unknown role or endpoint fails
  exactly like a wrong password: ``password authentication failed for user '<user>'``.
  SASLFinal and AuthenticationOk are held back until the compute is connected, so a cold start
  shows as slow authentication (TLS and the StartupMessage are answered at once).
- Control-plane and limit errors, each in the phase where Neon reports it (``Endpoint.failure``):
  access control and the per-endpoint rate limit before authentication, the rest while waking
  the compute, after it.
- Only user, database, application_name and the options without endpoint=/project=/neon_*
  reach the compute (plus client_encoding=UTF8). After ReadyForQuery bytes pass untouched.
- Scale to zero with connections open (``suspend()``): a pooled (``-pooler``) connection is closed
  with no message, as when PgBouncer is killed; a direct one gets the compute's own FATAL 57P01
  (pg_terminate_backend through an admin connection).

Simplified:
- The control plane is the ``endpoints`` dict; the proxy knows the role passwords (Neon's gets
  SCRAM secrets and reuses the client's keys). Every endpoint shares one compute (and one
  pooler, when given), except an endpoint given its own (``Endpoint.compute``: a read replica).
- Only SCRAM-SHA-256 is offered (Neon also offers SCRAM-SHA-256-PLUS, which asyncpg cannot do).
  The compute's own BackendKeyData reaches the client (Neon sends its own), so a CancelRequest
  is passed on as it is. No websockets, IP allow lists, proxy protocol, or retries of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tortoise_neon.testing import hostnames, servers

if TYPE_CHECKING:
    from typing_extensions import Self

INSECURE = "connection is insecure (try using `sslmode=require`)"
NO_ENDPOINT = (
    "Endpoint ID is not specified. Either please upgrade the postgres client library (libpq) "
    "for SNI support or pass the endpoint ID (first part of the domain name) as a parameter: "
    "'?options=endpoint%3D<endpoint-id>'. See more at https://neon.tech/sni")
PASSWORD_FAILED = "password authentication failed for user '{}'"
DISABLED = "Control plane request failed: endpoint is disabled"
NOT_FOUND = "Control plane request failed: endpoint cannot be found"
QUOTA = ("Your project has exceeded the data transfer quota. Upgrade your plan to increase "
         "limits.")
NOT_WOKEN = "Couldn't connect to compute node"
TOO_MANY_ATTEMPTS = "Too many connections attempts"
TOO_MANY_CONNECTIONS = "Too many connections to this endpoint. Please try again later."
NO_PERMIT = ("Failed to acquire permit to connect to the database. Too many database connection "
             "attempts are currently ongoing.")
BEFORE_AUTH = {DISABLED, NOT_FOUND, TOO_MANY_CONNECTIONS}  # the rest: while waking, after auth

SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST, PROTOCOL_3 = 80877103, 80877104, 80877102, 196608
NO_ALPN_ALERT = bytes([21, 3, 3, 0, 2, 2, 120])  # fatal no_application_protocol
ITERATIONS = 4096


class Refused(Exception):
    """The proxy answers with this message (as XX000) and hangs up."""


@dataclass
class Endpoint:
    """One endpoint as the control plane sees it; the tests choose its behaviour."""

    failure: str | None = None  # answer every attempt with this message (one from above) ...
    failures: int | None = None  # ... or only the first K attempts, then work
    wake_delay: float = 0.0  # seconds a suspended compute takes to wake
    suspended: bool = False  # scaled to zero: the next connection waits for wake_delay
    answer_delay: float = 0.0  # seconds each connection waits for the control plane: a busy one
    suspend_after: float | None = None  # suspend N s after a connection's next query (0: at it)
    attempts: int = 0  # connections that asked for this endpoint
    compute: Target | None = None  # its own compute (a read replica's), else the proxy's
    sessions: set[Session] = field(default_factory=set)

    def failure_now(self) -> str | None:
        self.attempts += 1
        if self.failure is None or (self.failures is not None and self.attempts > self.failures):
            return None
        return self.failure


@dataclass(frozen=True)
class Target:
    """Where the proxy connects: the compute, or a pooler in front of it."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None


@dataclass(eq=False)
class Session:
    client: Conn
    compute: Conn
    pooled: bool
    pid: int


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def auth(code: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!i", code) + data)


def error(text: str) -> bytes:
    """Neon's only error shape: severity, SQLSTATE XX000 and the message; no detail, no hint."""
    return message(b"E", b"SERROR\0CXX000\0M" + text.encode() + b"\0\0")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "sha256").digest()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(ClientKey, ServerKey) for a password, as RFC 5802 derives them."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


def attributes(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def parse_hello(record: bytes) -> tuple[str | None, list[bytes] | None]:
    """The SNI host name and the offered ALPN protocols (None: none) of a ClientHello record."""
    sni, alpn, body = None, None, record[5:]
    try:
        if record[0] != 22 or body[0] != 1:
            return None, None
        pos = 38  # handshake header (4), version (2), random (32)
        pos += 1 + body[pos]  # session id
        pos += 2 + int.from_bytes(body[pos:pos + 2], "big")  # cipher suites
        pos += 1 + body[pos]  # compression methods
        end, pos = pos + 2 + int.from_bytes(body[pos:pos + 2], "big"), pos + 2
        while pos + 4 <= end:
            kind, size = struct.unpack_from("!HH", body, pos)
            data, pos = body[pos + 4:pos + 4 + size], pos + 4 + size
            if kind == 0 and data[2] == 0:  # server_name: list length, type host_name, length
                sni = data[5:5 + int.from_bytes(data[3:5], "big")].decode()
            elif kind == 16:  # application_layer_protocol_negotiation
                alpn, i = [], 2
                while i < len(data):
                    alpn.append(data[i + 1:i + 1 + data[i]])
                    i += 1 + data[i]
    except IndexError:
        pass
    return sni, alpn


class Conn:
    """One side of a proxied connection: buffered reads; TLS through memory BIOs when started."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.tls: ssl.SSLObject | None = None
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.pending = b""  # held back until the compute answers (SASLFinal, AuthenticationOk)
        self.sni: str | None = None  # the host name the client asked for in its ClientHello

    async def start_tls(self, context: ssl.SSLContext, server_side: bool,
                        hostname: str | None = None) -> None:
        self.incoming.write(bytes(self.buf))  # bytes already read belong to the handshake
        self.buf.clear()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side, hostname)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionError("closed during the TLS handshake") from None
        await self._flush()

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        self.incoming.write(data)
        return bool(data)

    async def _flush(self) -> None:
        if data := self.outgoing.read():
            self.writer.write(data)
            await self.writer.drain()

    async def read(self) -> bytes:
        """The next bytes from the peer (decrypted); b"" when it hung up."""
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            return data
        while self.tls is not None:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not await self._fill():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
        return await self.reader.read(65536)

    async def peek(self, size: int) -> bytes:
        while len(self.buf) < size:
            data = await self.read()
            if not data:
                raise ConnectionError("the peer hung up")
            self.buf += data
        return bytes(self.buf[:size])

    async def take(self, size: int) -> bytes:
        data = await self.peek(size)
        del self.buf[:size]
        return data

    async def startup(self) -> bytes:
        """A length-prefixed startup packet (SSLRequest, StartupMessage, CancelRequest)."""
        return await self.take(int.from_bytes(await self.peek(4), "big"))

    async def message(self) -> tuple[bytes, bytes]:
        head = await self.take(5)
        return head[:1], await self.take(int.from_bytes(head[1:], "big") - 4)

    async def send(self, data: bytes) -> None:
        if self.tls is None:
            self.writer.write(data)
            await self.writer.drain()
        else:
            self.tls.write(data)
            await self._flush()

    def close(self) -> None:
        """A bare TCP close: no message, no TLS close_notify."""
        self.writer.close()


class NeonProxy:
    """The proxy on its own event loop in a background thread; see the module docstring."""

    def __init__(self, compute: Target, roles: dict[str, str], admin: tuple[str, str],
                 certfile: str, keyfile: str, domain: str) -> None:
        self.compute, self.roles, self.admin, self.domain = compute, roles, admin, domain
        self.pooler: Target | None = None  # -pooler endpoints go here when set (PgBouncer)
        self.endpoints: dict[str, Endpoint] = {}
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.context.set_alpn_protocols(["postgresql"])
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _shutdown(self) -> None:
        """Stop listening and end every connection (each closes its sockets on the way out)."""
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def suspend(self, endpoint: str) -> None:
        """Scale the endpoint's compute to zero now; returns once its connections are closed."""
        self._call(self._suspend(endpoint))

    async def _suspend(self, name: str) -> None:
        endpoint = self.endpoints[name]
        endpoint.suspended = True
        closing = list(endpoint.sessions)
        for session in closing:
            if session.pooled:
                session.client.close()  # the pooler is gone: no message at all
                session.compute.close()
            else:  # the compute shuts down: the backend sends FATAL 57P01 and hangs up
                admin, _, _ = await self._login(self.compute, {"user": self.admin[0]},
                                                self.admin[1])
                await admin.send(message(b"Q", f"SELECT pg_terminate_backend({session.pid})\0"
                                         .encode()))
                while (await admin.message())[0] != b"Z":
                    pass
                admin.close()
        for _ in range(500):  # until the FATALs have been passed on and the clients hung up on
            if not endpoint.sessions.intersection(closing):
                break
            await asyncio.sleep(0.01)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Conn(reader, writer)
        try:
            await self._session(client)
        except Refused as refusal:
            await client.send(client.pending + error(str(refusal)))
        except (OSError, UnicodeError, ValueError, KeyError, IndexError):
            pass  # the client went away or spoke nonsense: Neon logs it and hangs up
        finally:
            client.close()

    async def _handshake(self, client: Conn) -> bytes | None:
        """TLS (SSLRequest or direct), then the StartupMessage; None when the client is done."""
        while True:
            if client.tls is None and (await client.peek(1))[0] == 22:  # a TLS ClientHello
                head = await client.peek(5)
                sni, alpn = parse_hello(await client.peek(5 + int.from_bytes(head[3:], "big")))
                if alpn is not None and b"postgresql" not in alpn:
                    await client.send(NO_ALPN_ALERT)
                    return None
                await client.start_tls(self.context, server_side=True)
                client.sni = sni
                continue
            packet = await client.startup()
            code = int.from_bytes(packet[4:8], "big")
            if code == SSL_REQUEST and client.tls is None:
                await client.send(b"S")
            elif code == GSSENC_REQUEST and client.tls is None:
                await client.send(b"N")
            elif code == CANCEL_REQUEST:  # the compute's own keys reach the client: pass it on
                _, writer = await asyncio.open_connection(self.compute.host, self.compute.port)
                writer.write(packet)
                writer.close()
                return None
            elif code == PROTOCOL_3 and client.tls is None:
                raise Refused(INSECURE)
            elif code == PROTOCOL_3:
                return packet
            else:
                return None  # a protocol violation: Neon hangs up without a word

    def _endpoint_id(self, sni: str | None, options: str) -> str | None:
        label, _, domain = (sni or "").partition(".")
        from_sni = label if domain == self.domain else None
        named = [o.split("=", 1)[1] for o in re.split(r"(?<!\\)\s+", options)
                 if o.startswith(("endpoint=", "project="))]
        from_options = named[0] if len(named) == 1 else None
        if from_sni and from_options and from_sni != from_options:
            raise Refused(f"Inconsistent project name inferred from SNI ('{from_sni}') and "
                          f"project option ('{from_options}').")
        found = from_options or from_sni
        if found is not None and not re.fullmatch(r"[\w-]*", found):
            raise Refused(f"Project name ('{found}') must contain only alphanumeric characters "
                          "and hyphen.")
        return found

    async def _session(self, client: Conn) -> None:
        packet = await self._handshake(client)
        if packet is None:
            return
        fields = packet[8:].split(b"\0")
        pairs = zip(fields[::2], fields[1::2], strict=False)
        params = {k.decode(): v.decode() for k, v in pairs if k}
        user, options = params.get("user", ""), params.get("options", "")
        endpoint_id = self._endpoint_id(client.sni, options)
        hacked_password = None
        if endpoint_id is None:  # no SNI, no option: the endpoint may come with the password
            await client.send(auth(3))  # AuthenticationCleartextPassword
            password = (await client.message())[1].rstrip(b"\0").decode()
            hack = re.fullmatch(r"(?:endpoint|project)=([^;$]*)[;$](.*)", password, re.DOTALL)
            if hack is None:
                raise Refused(NO_ENDPOINT)
            endpoint_id, hacked_password = hack.groups()
        name = endpoint_id.removesuffix("-pooler")
        endpoint = self.endpoints.get(name)
        failure = endpoint.failure_now() if endpoint else None
        if endpoint is not None:
            await asyncio.sleep(endpoint.answer_delay)
        if failure in BEFORE_AUTH:
            raise Refused(failure)
        secret = self.roles.get(user) if endpoint else None  # unknown: a mocked secret
        if hacked_password is not None:
            if secret is None or hacked_password != secret:
                raise Refused(PASSWORD_FAILED.format(user))
            client.pending = auth(0)
        else:
            await self._authenticate(client, user, secret)
        assert endpoint is not None and secret is not None
        if endpoint.suspended:  # a cold start: authentication takes longer
            await asyncio.sleep(endpoint.wake_delay)
            endpoint.suspended = failure is not None
        if failure:
            raise Refused(failure)
        pooled = endpoint_id.endswith("-pooler")
        target = endpoint.compute or (self.pooler if pooled and self.pooler else self.compute)
        kept = [o for o in re.split(r"(?<!\\)\s+", options) if o and not re.match(
            r"(endpoint|project)=|neon_\w+:", o)]
        forwarded: dict[str, str] = {
            k: params[k] for k in ("user", "database", "application_name") if k in params}
        forwarded.update({"options": " ".join(kept)} if kept else {})
        try:
            compute, greeting, pid = await self._login(target, forwarded, secret)
        except OSError:
            raise Refused(NOT_WOKEN) from None
        await client.send(client.pending + greeting)
        client.pending = b""
        session = Session(client, compute, pooled, pid)
        endpoint.sessions.add(session)
        try:
            await self._pass(session, name)
        finally:
            endpoint.sessions.discard(session)
            compute.close()

    async def _authenticate(self, client: Conn, user: str, secret: str | None) -> None:
        """SCRAM-SHA-256 as the server; leaves SASLFinal + AuthenticationOk in ``pending``."""
        await client.send(auth(10, b"SCRAM-SHA-256\0\0"))
        kind, body = await client.message()
        if kind != b"p" or not body.startswith(b"SCRAM-SHA-256\0"):
            raise Refused("authentication protocol violation")
        first = body[len(b"SCRAM-SHA-256\0") + 4:].decode()
        bare = first.split(",", 2)[2]  # after the GS2 header "n,,"
        nonce = attributes(bare)["r"] + b64(secrets.token_bytes(18))
        salt = secrets.token_bytes(16)
        server_first = f"r={nonce},s={b64(salt)},i={ITERATIONS}"
        await client.send(auth(11, server_first.encode()))
        final = (await client.message())[1].decode()
        without_proof, _, proof = final.rpartition(",p=")
        client_key, server_key = scram_keys(secret or secrets.token_hex(), salt, ITERATIONS)
        stored = hashlib.sha256(client_key).digest()
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = _hmac(stored, auth_message)
        recovered = xor(base64.b64decode(proof), signature)
        if (secret is None or attributes(without_proof).get("r") != nonce
                or not hmac.compare_digest(hashlib.sha256(recovered).digest(), stored)):
            raise Refused(PASSWORD_FAILED.format(user))
        verifier = b"v=" + b64(_hmac(server_key, auth_message)).encode()
        client.pending = auth(12, verifier) + auth(0)

    async def _login(self, target: Target, params: dict[str, str],
                     password: str) -> tuple[Conn, bytes, int]:
        """Log in to the compute (SCRAM as the client): the connection, everything it sent
        after AuthenticationOk up to ReadyForQuery, and its backend pid."""
        compute = Conn(*await asyncio.open_connection(target.host, target.port))
        if target.tls:
            await compute.send(struct.pack("!ii", 8, SSL_REQUEST))
            if await compute.take(1) == b"S":
                await compute.start_tls(target.tls, server_side=False, hostname=target.host)
        params = {**params, "client_encoding": "UTF8"}
        body = b"".join(f"{k}\0{v}\0".encode() for k, v in params.items()) + b"\0"
        await compute.send(struct.pack("!ii", len(body) + 8, PROTOCOL_3) + body)
        bare, server_first, greeting, pid = f"n=,r={b64(secrets.token_bytes(18))}", "", b"", 0
        while True:
            kind, body = await compute.message()
            code = int.from_bytes(body[:4], "big") if kind == b"R" else -1
            if kind == b"E":  # re-sent Neon's way: the message text only
                compute.close()
                text = {f[:1]: f[1:] for f in body.split(b"\0") if f}.get(b"M", b"")
                raise Refused(text.decode())
            if code == 10:
                first = f"n,,{bare}".encode()
                await compute.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(
                    first)) + first))
            elif code == 11:
                server_first = body[4:].decode()
                server = attributes(server_first)
                client_key, _ = scram_keys(password, base64.b64decode(server["s"]),
                                           int(server["i"]))
                without_proof = f"c=biws,r={server['r']}"
                signature = _hmac(hashlib.sha256(client_key).digest(),
                                  f"{bare},{server_first},{without_proof}".encode())
                proof = xor(client_key, signature)
                await compute.send(message(b"p", f"{without_proof},p={b64(proof)}".encode()))
            elif kind != b"R":  # ParameterStatus, BackendKeyData, NoticeResponse, ReadyForQuery
                greeting += message(kind, body)
                if kind == b"K":
                    pid = int.from_bytes(body[:4], "big")
                if kind == b"Z":
                    return compute, greeting, pid

    async def _pass(self, session: Session, name: str) -> None:
        """After ReadyForQuery: bytes both ways, untouched, until either side hangs up."""
        endpoint = self.endpoints[name]

        async def upstream() -> None:
            armed = False
            while data := await session.client.read():
                if not armed and endpoint.suspend_after is not None:
                    armed = True
                    suspend = lambda: self.loop.create_task(self._suspend(name))
                    if endpoint.suspend_after == 0:  # before this query is answered
                        suspend()
                        continue
                    self.loop.call_later(endpoint.suspend_after, suspend)
                await session.compute.send(data)

        async def downstream() -> None:
            while data := await session.compute.read():
                await session.client.send(data)

        tasks = [self.loop.create_task(upstream()), self.loop.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def in_front_of(server: servers.PostgresServer, workdir: Path) -> NeonProxy:
    """A Neon proxy (not started) for ``server``, reached by Neon-shaped names
    (hostnames.py), with a certificate from the server's CA; its endpoint ``hostnames.ENDPOINT``
    is awake."""
    assert server.ca_path is not None
    cert, key = servers.issue_certificate(
        server.ca_path, [f"*.{hostnames.DOMAIN}", "localhost", "127.0.0.1"], workdir, "neon")
    proxy = NeonProxy(Target(server.host, server.port), {servers.APP_USER: server.app_password},
                      (servers.SUPERUSER, server.super_password), str(cert), str(key),
                      hostnames.DOMAIN)
    proxy.endpoints[hostnames.ENDPOINT] = Endpoint()
    return proxy

