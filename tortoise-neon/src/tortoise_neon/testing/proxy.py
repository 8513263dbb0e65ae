"""A TCP proxy that delays server-to-client traffic and counts round trips on the wire.

Put it between a client and PostgreSQL (it listens on 127.0.0.1, so a certificate for
127.0.0.1 still verifies through it). Every byte is forwarded unchanged; the proxy only watches.

Round trips, per connection:

- 1 for the TCP handshake;
- +1 each time the client sends (or hangs up) after the server sent something (or hung up)
  since the client's last send: the client had to wait for the server, which costs one
  network round trip. A client that hangs up only after the server closed the connection
  (asyncpg's default ``close()``: Terminate, then wait for the server's FIN) pays one more.
  Only what the server sent after it got the client's last bytes counts as an answer: the tail
  of an earlier answer that arrives just after the client's next send (a FIN right behind a TLS
  close_notify, say) does not make that client's next move a new round trip.

Counts are exact with a delay of a few ms. With no delay, a client that does not wait for an
answer (Terminate, then close) may still receive it before its close completes, which counts a
round trip no real network would cost.

The delay ``D`` applies to everything the server sends, plus one extra ``D`` before its first
byte (the TCP handshake's SYN-ACK), so a script's wall time grows by ``D`` per round trip.

The proxy also labels what it forwards: PostgreSQL messages in plaintext, TLS records once
TLS starts (their content is encrypted), and it detects TLS 1.3 HelloRetryRequest (the server
asking for a second ClientHello with another key share: one more round trip).
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608
NUL = b"\0"
# ServerHello.random of a HelloRetryRequest (RFC 8446, 4.1.3)
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

CLIENT_MESSAGES = {
    "Q": "Query", "P": "Parse", "B": "Bind", "D": "Describe", "E": "Execute", "S": "Sync",
    "H": "Flush", "X": "Terminate", "C": "Close", "p": "SASLResponse", "d": "CopyData",
    "c": "CopyDone", "f": "CopyFail", "F": "FunctionCall",
}
SERVER_MESSAGES = {
    "R": "Authentication", "S": "ParameterStatus", "K": "BackendKeyData", "Z": "ReadyForQuery",
    "1": "ParseComplete", "2": "BindComplete", "3": "CloseComplete", "t": "ParameterDescription",
    "T": "RowDescription", "D": "DataRow", "C": "CommandComplete", "n": "NoData",
    "E": "ErrorResponse", "N": "NoticeResponse", "I": "EmptyQueryResponse", "s": "PortalSuspended",
    "G": "CopyInResponse", "H": "CopyOutResponse", "d": "CopyData", "c": "CopyDone",
    "A": "NotificationResponse", "v": "NegotiateProtocolVersion",
}
AUTH_KINDS = {0: "AuthenticationOk", 3: "AuthenticationCleartextPassword",
              5: "AuthenticationMD5Password", 10: "AuthenticationSASL",
              11: "AuthenticationSASLContinue", 12: "AuthenticationSASLFinal"}
TLS_RECORDS = {20: "ChangeCipherSpec", 21: "Alert", 22: "Handshake", 23: "AppData"}
TLS_HANDSHAKES = {1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket",
                  8: "EncryptedExtensions", 11: "Certificate", 13: "CertificateRequest",
                  15: "CertificateVerify", 20: "Finished"}


def _snippet(sql: bytes, width: int = 38) -> str:
    text = " ".join(sql.decode(errors="replace").split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Stream:
    """One direction of a connection, split into labelled messages as the bytes go by."""

    def __init__(self, side: str) -> None:
        self.side = side  # "client" or "server"
        # client: startup | tls | typed; server: typed | answer | tls
        self.mode = "startup" if side == "client" else "typed"
        self.buf = bytearray()
        self.after_ccs = False  # TLS 1.2: handshake records after ChangeCipherSpec are encrypted
        self.peer: _Stream | None = None
        self.hello_retries = 0
        self.sasl_sent = 0

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        labels: list[str] = []
        pos = 0
        while True:
            label, size = self._next(pos)
            if size == 0:
                break
            labels.append(label)
            pos += size
        del self.buf[:pos]
        return labels

    def _next(self, pos: int) -> tuple[str, int]:
        """The label and size of the complete message at ``pos``, or ("", 0)."""
        buf, left = self.buf, len(self.buf) - pos
        if left <= 0:
            return "", 0
        if self.mode == "answer":  # the one-byte answer to SSLRequest / GSSENCRequest
            answer = chr(buf[pos])
            if answer in "SG":
                self.mode = "tls"
                if self.peer:
                    self.peer.mode = "tls"
            else:
                self.mode = "typed"
            return f"'{answer}'", 1
        if self.mode == "tls":
            if left < 5:
                return "", 0
            size = 5 + struct.unpack_from("!H", buf, pos + 3)[0]
            if left < size:
                return "", 0
            content = buf[pos]
            label = TLS_RECORDS.get(content, f"TLS({content})")
            if content == 20:
                self.after_ccs = True
            elif content == 22 and size >= 9:
                hs = buf[pos + 5]
                length = int.from_bytes(buf[pos + 6: pos + 9], "big")
                # after ChangeCipherSpec, TLS 1.2 encrypts its handshake records; TLS 1.3 sends
                # its compatibility ChangeCipherSpec before plaintext ones (a second
                # ClientHello, a ServerHello after HelloRetryRequest): one message per record
                if not self.after_ccs or (hs in TLS_HANDSHAKES and length == size - 9):
                    label = TLS_HANDSHAKES.get(hs, f"Handshake({hs})")
                if hs == 2 and bytes(buf[pos + 11: pos + 43]) == HRR_RANDOM:
                    label = "HelloRetryRequest"
                    self.hello_retries += 1
            return label, size
        if self.mode == "startup":
            if buf[pos] == 0x16:  # direct TLS (sslnegotiation=direct): a ClientHello at once
                self.mode = "tls"
                if self.peer:
                    self.peer.mode = "tls"
                return self._next(pos)
            if left < 8:
                return "", 0
            size, code = struct.unpack_from("!ii", buf, pos)
            if left < size:
                return "", 0
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                if self.peer:
                    self.peer.mode = "answer"
                return ("SSLRequest" if code == SSL_REQUEST else "GSSENCRequest"), size
            if code == CANCEL_REQUEST:
                return "CancelRequest", size
            self.mode = "typed"
            return ("StartupMessage" if code == PROTOCOL_3 else f"Startup({code})"), size
        # typed messages: type byte, int32 length (counting itself)
        if left < 5:
            return "", 0
        size = 1 + struct.unpack_from("!i", buf, pos + 1)[0]
        if left < size:
            return "", 0
        kind = chr(buf[pos])
        body = bytes(buf[pos + 5: pos + size])
        if self.side == "server":
            if kind == "R":
                auth = int(struct.unpack_from("!i", body)[0])
                return AUTH_KINDS.get(auth, f"Authentication({auth})"), size
            return SERVER_MESSAGES.get(kind, f"'{kind}'"), size
        if kind == "Q":
            return f"Query[{_snippet(body.rstrip(NUL))}]", size
        if kind == "P":
            statement = body.partition(NUL)[2].partition(NUL)[0]
            return f"Parse[{_snippet(statement)}]", size
        if kind == "p":
            self.sasl_sent += 1
            return ("SASLInitialResponse" if self.sasl_sent == 1 else "SASLResponse"), size
        return CLIENT_MESSAGES.get(kind, f"'{kind}'"), size


@dataclass
class Flight:
    """What the client sent in one go, and what the server sent before the client's next send."""

    client: list[str] = field(default_factory=list)
    server: list[str] = field(default_factory=list)
    client_bytes: int = 0
    server_bytes: int = 0
    server_hung_up: bool = False
    counted: bool = False  # the client waited for the server after this flight


@dataclass
class Trace:
    """One proxied connection: its round trips and what was sent in each."""

    round_trips: int = 1  # the TCP handshake
    hello_retries: int = 0  # TLS 1.3 HelloRetryRequests seen (each costs one round trip)
    waited_for_hangup: bool = False  # the client hung up only after the server closed
    client_reset: bool = False
    flights: list[Flight] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # the client connected
    last_send: float = 0.0  # when the client's latest bytes reached the proxy
    hung_up: float | None = None  # when the client hung up
    finished: bool = False
    _client_closed: bool = False
    _server_since_send: bool = False
    _server_closed: bool = False

    def client_data(self, data: bytes, labels: list[str]) -> None:
        if not self.flights or self._server_since_send:
            if self.flights:
                self.round_trips += 1
                self.flights[-1].counted = True
            self.flights.append(Flight())
        self._server_since_send = False
        self.last_send = time.monotonic()
        self.flights[-1].client += labels
        self.flights[-1].client_bytes += len(data)

    def client_hangup(self) -> None:
        if self._client_closed:
            return
        self._client_closed = True
        self.hung_up = time.monotonic()
        if self._server_since_send and self.flights:
            self.round_trips += 1
            self.flights[-1].counted = True
            self.waited_for_hangup = self._server_closed
            self.flights.append(Flight(client=["(hang up)"]))

    def server_data(self, data: bytes, labels: list[str], received: float) -> None:
        """``received``: when the proxy got it from the server (before the delay)."""
        if not self.flights:
            self.flights.append(Flight())
        if received > self.last_send:  # an answer to the client's latest bytes
            self._server_since_send = True
        self.flights[-1].server += labels
        self.flights[-1].server_bytes += len(data)

    def server_hangup(self, received: float) -> None:
        if self._client_closed or self._server_closed:
            return
        self._server_closed = True
        if received > self.last_send:
            self._server_since_send = True
        if not self.flights:
            self.flights.append(Flight())
        self.flights[-1].server_hung_up = True

    @property
    def duration(self) -> float:
        """Seconds from the client's connect to its hang-up."""
        return (self.hung_up or time.monotonic()) - self.started

    @property
    def round_trips_without_hrr(self) -> int:
        return self.round_trips - self.hello_retries

    def breakdown(self) -> list[str]:
        """One line per round trip: what the client sent, and what it waited for."""
        return describe_flights(self.flights)


def describe_flights(flights: list[Flight]) -> list[str]:
    """One line per round trip: what the client sent, and what it waited for."""
    lines = ["RT  1  TCP handshake"]
    number = 1
    for flight in flights:
        if flight.counted:
            number += 1
        head = f"RT {number:2d}" if flight.counted else "   --"
        server = summarize(flight.server)
        if flight.server_hung_up:
            server = (server + ", " if server else "") + "(hang up)"
        lines.append(f"{head}  {summarize(flight.client)}  ->  {server or '(nothing)'}")
    return lines


def summarize(labels: list[str]) -> str:
    """Labels with runs collapsed: DataRow x10."""
    out: list[str] = []
    i = 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        out.append(labels[i] if j - i == 1 else f"{labels[i]} x{j - i}")
        i = j
    return ", ".join(out)


class CountingProxy:
    """An asyncio TCP proxy to ``target_host:target_port`` that records a Trace per connection."""

    def __init__(self, target_host: str, target_port: int, delay_ms: float = 0.0,
                 listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.delay = delay_ms / 1000
        self.traces: list[Trace] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        trace = Trace()
        self.traces.append(trace)
        delay = self.delay
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            trace.finished = True
            return
        client, server = _Stream("client"), _Stream("server")
        client.peer, server.peer = server, client
        queue: asyncio.Queue[tuple[float, float, bytes | None]] = asyncio.Queue()

        async def upstream() -> None:
            try:
                while data := await creader.read(65536):
                    trace.client_data(data, client.feed(data))
                    swriter.write(data)
                    await swriter.drain()
            except OSError:
                trace.client_reset = True
            trace.client_hangup()
            swriter.close()

        async def from_server() -> None:
            extra = delay  # the TCP handshake's round trip, paid before the first byte
            try:
                while data := await sreader.read(65536):
                    now = time.monotonic()
                    queue.put_nowait((now + delay + extra, now, data))
                    extra = 0.0
            except OSError:
                pass
            now = time.monotonic()
            queue.put_nowait((now + delay + extra, now, None))

        async def downstream() -> None:
            while True:
                due, received, data = await queue.get()
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    trace.server_hangup(received)
                    if not trace._client_closed:
                        try:
                            cwriter.write_eof()
                        except OSError:
                            pass
                    return
                if trace._client_closed:
                    continue
                trace.server_data(data, server.feed(data), received)
                try:
                    cwriter.write(data)
                    await cwriter.drain()
                except OSError:
                    pass

        try:
            await asyncio.gather(upstream(), from_server(), downstream())
        finally:
            trace.hello_retries = server.hello_retries
            cwriter.close()
            trace.finished = True


class ProxyThread:
    """A CountingProxy on its own event loop in a background thread, for blocking callers.

    with ProxyThread(host, port, delay_ms=25) as proxy:
        subprocess.run(..., env={"DATABASE_URL": url_with_port(proxy.port)})
        traces = proxy.settle()
    """

    def __init__(self, target_host: str, target_port: int, delay_ms: float = 0.0) -> None:
        self.proxy = CountingProxy(target_host, target_port, delay_ms)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    def set_delay(self, delay_ms: float) -> None:
        self.proxy.delay = delay_ms / 1000

    def clear(self) -> None:
        self.proxy.traces = []

    def settle(self, timeout: float = 15.0) -> list[Trace]:
        """The traces so far, once every connection has been closed on both sides."""
        deadline = time.monotonic() + timeout
        while not all(t.finished for t in self.proxy.traces):
            if time.monotonic() > deadline:
                raise TimeoutError("a proxied connection is still open")
            time.sleep(0.01)
        return list(self.proxy.traces)

    def __enter__(self) -> Self:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        return self

    async def _stop(self) -> None:
        """Stop listening, and end the connections still open (an app's pool that was not
        closed yet) while the loop runs, so that none is left to be finalised after it."""
        await self.proxy.stop()
        open_ones = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in open_ones:
            task.cancel()
        await asyncio.gather(*open_ones, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
