"""Server-side WebSocket connections on a Trio stream, with wsproto underneath.

Theory of operation
-------------------
The listener reads an HTTP request head from a new TCP (or TLS) stream and
parses it into a `RequestHead`, keeping any bytes that followed the head (a
client may pipeline its first frames right behind the upgrade request) in
`RequestHead.trailing`. `accept_websocket` validates the upgrade, picks a
subprotocol, writes the ``101 Switching Protocols`` response itself and feeds
the trailing bytes to a low-level `wsproto.connection.Connection`, so no
wsproto/h11 handshake object stays alive per connection.
`reject_websocket` answers with a plain HTTP error instead.

A `WebSocketConnection` is served by at most two tasks of its owner:

* one *reader* calling `WebSocketConnection.receive_message`, which feeds
  wsproto, reassembles fragmented messages under a size limit, answers pings,
  records pongs and runs the closing handshake when the peer starts it;
* one *writer* calling `WebSocketConnection.send_frames` with frames that
  were built once by `build_frame` and are shared by every subscriber.

Between them, `WebSocketConnection.try_send_frames` writes frames from any
task without blocking or yielding: one non-blocking ``write`` on the socket.
That is the fan-out's fast path (no task switch per connection). What the
kernel does not take at once is kept as the connection's *backlog*, which
the next locked write sends first, so the byte stream stays whole.

Data frames never go through wsproto: `build_frame` makes them, and wsproto's
outbound state only ever sees control frames (ping, pong, close). Every write
to the stream -- data from the writer, control frames from the reader or from
`aclose` -- happens while holding one `trio.Lock` per connection, and control
frames are *generated* (wsproto state changes) under that same lock, so frames
never interleave inside another ``send_all`` and nothing is written after our
close frame. The lock is taken with ``acquire_nowait`` first, so the
uncontended hot path adds no scheduling point of its own.

A write that is cancelled (a write deadline) may leave a partial frame on the
wire: the transport is then closed at once and everything afterwards raises
`ConnectionClosed`. Control frames written from inside `receive_message` are
shielded (bounded by ``close_timeout``), so cancelling a read -- the session's
heartbeat timer -- never tears a pong. Transport errors
(`trio.BrokenResourceError`, `trio.ClosedResourceError`, `OSError`) and
protocol errors are translated here, once, into `ConnectionClosed`.

No task is spawned per connection, and a plain socket is waited on and read
directly rather than through ``SocketStream.receive_some``: an idle connection
waits in `receive_message`, and every coroutine frame on that stack is memory
held per connection. Measured with tracemalloc (S4, 2,000 idle subscribed
connections), the whole gateway holds about 8.2 KB of Python heap per
connection; wsproto's objects are about 1 KB of it and the `trio.Lock` 0.2 KB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import suppress
from http import HTTPStatus
from typing import Final

import attrs
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

__all__ = [
    "BadRequest",
    "ConnectionClosed",
    "RequestHead",
    "WebSocketConnection",
    "accept_websocket",
    "build_frame",
    "check_websocket_upgrade",
    "parse_request_head",
    "reject_websocket",
]

#: Close code used when the transport went away without a close handshake
#: (RFC 6455 section 7.1.5); never sent on the wire.
ABNORMAL_CLOSURE: Final = 1006
_PROTOCOL_ERROR: Final = 1002
_MESSAGE_TOO_BIG: Final = 1009

DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024
DEFAULT_CLOSE_TIMEOUT: Final = 2.0

# One receive_some per wake-up; also the most raw bytes wsproto ever buffers
# beyond the message-size limit before the limit is checked.
_RECEIVE_SIZE: Final = 64 * 1024

_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN_CHARS: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_HTTP_VERSIONS: Final = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
# wsproto states in which our close frame may still be sent.
_CLOSE_ALLOWED: Final = frozenset({ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING})


class ConnectionClosed(Exception):
    """The WebSocket is closed or closing; no more messages in this direction.

    ``code`` is the code of the first close frame sent or received on this
    connection, or 1006 when the transport broke before any close frame.
    ``reason`` is the accompanying text (may be empty).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        suffix = f": {self.reason}" if self.reason else ""
        return f"WebSocket closed with code {self.code}{suffix}"


class BadRequest(Exception):
    """An HTTP request the server refuses before any hand-off or upgrade.

    Carries the ``status_code`` to answer with, a one-line ``message`` for the
    response body, and extra response ``headers`` (e.g. ``Sec-WebSocket-Version``
    for 426).
    """

    def __init__(
        self, status_code: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(status_code, message)
        self.status_code = status_code
        self.message = message
        self.headers = tuple(headers)

    def __str__(self) -> str:
        return f"{self.status_code} {self.message}"


# --------------------------------------------------------------------------- HTTP head


@attrs.frozen
class RequestHead:
    """A parsed HTTP/1.x request head, as read by the listener.

    ``raw_headers`` is the validated header block as received (``name: value``
    lines joined by CRLF); `headers` and `header` parse it on each call, so an
    idle WebSocket keeps one small bytes object rather than a tuple per
    header line. ``trailing`` holds the bytes that arrived after the head
    (early WebSocket frames, or a pipelined body); `accept_websocket` consumes
    them. ``client`` is the peer's ``(host, port)`` when known.
    """

    method: str
    target: str
    http_version: str
    raw_headers: bytes = b""
    trailing: bytes = b""
    client: tuple[str, int] | None = None

    @property
    def path(self) -> str:
        """The raw (still percent-encoded) path of ``target``, e.g. ``/ws/client-1``."""
        path = self.target.partition("?")[0]
        if not path.startswith("/") and "://" in path:
            # Absolute form (RFC 9112 section 3.2.2): keep only the path.
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        return path

    @property
    def query(self) -> str:
        """The raw query string of ``target`` (without ``?``), or ``""``."""
        return self.target.partition("?")[2]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header line in order: lower-cased name, value without padding."""
        return list(_split_headers(self.raw_headers))

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), repeated lines joined by ``", "``.

        Values are decoded as Latin-1, HTTP's lossless byte-to-text mapping.
        Returns None when absent.
        """
        key = name.lower().encode("ascii")
        values = [value for field, value in _split_headers(self.raw_headers) if field == key]
        if not values:
            return None
        return b", ".join(values).decode("latin-1")

    def header_tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of header ``name``, stripped and lower-cased."""
        value = self.header(name)
        if value is None:
            return []
        return [token for token in (part.strip().lower() for part in value.split(",")) if token]

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        value = self.header("sec-websocket-protocol")
        if value is None:
            return []
        return [part.strip() for part in value.split(",") if part.strip()]

    @property
    def is_websocket_upgrade(self) -> bool:
        """True when the client asks for ``Upgrade: websocket`` (valid or not)."""
        return "websocket" in self.header_tokens("upgrade")


def _split_headers(raw: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not raw:
        return
    for line in raw.split(b"\r\n"):
        name, _, value = line.partition(b":")
        yield name.lower(), value.strip(b" \t")


def parse_request_head(
    head: bytes,
    *,
    trailing: bytes = b"",
    client: tuple[str, int] | None = None,
) -> RequestHead:
    """Parse an HTTP/1.0 or 1.1 request head.

    ``head`` runs from the request line up to (optionally including) the blank
    line; lines end with CRLF. Strict by design: obsolete line folding, header
    names that are not tokens, and control characters in values are rejected.

    Raises `BadRequest` (400, or 505 for another HTTP version).
    """
    if head.endswith(b"\r\n\r\n"):
        head = head[:-4]
    request_line, _, raw_headers = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "Malformed request line")
    method, target, version = parts
    if not method or not _TOKEN_CHARS.issuperset(method):
        raise BadRequest(400, "Malformed request method")
    if not target or any(byte <= 0x20 or byte >= 0x7F for byte in target):
        raise BadRequest(400, "Malformed request target")
    http_version = _HTTP_VERSIONS.get(version)
    if http_version is None:
        raise BadRequest(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
    if raw_headers:
        for line in raw_headers.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN_CHARS.issuperset(name):
                # Also catches obsolete line folding (a line starting with a space).
                raise BadRequest(400, "Malformed header line")
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                raise BadRequest(400, "Invalid character in header value")
    return RequestHead(
        method=method.decode("ascii"),
        target=target.decode("ascii"),
        http_version=http_version,
        raw_headers=raw_headers,
        trailing=trailing,
        client=client,
    )


def check_websocket_upgrade(request: RequestHead) -> bytes:
    """Validate an RFC 6455 opening handshake and return its ``Sec-WebSocket-Key``.

    Raises `BadRequest` with 426 (and the header telling what to upgrade to)
    when the Upgrade or version is wrong, 400 for anything else.
    """
    if request.method != "GET":
        raise BadRequest(400, "WebSocket handshake must use GET")
    if request.http_version != "1.1":
        raise BadRequest(400, "WebSocket handshake requires HTTP/1.1")
    if "websocket" not in request.header_tokens("upgrade"):
        raise BadRequest(426, "Upgrade to websocket required", [(b"Upgrade", b"websocket")])
    if "upgrade" not in request.header_tokens("connection"):
        raise BadRequest(400, "Missing header 'Connection: Upgrade'")
    if request.header("sec-websocket-version") != "13":
        raise BadRequest(426, "Unsupported WebSocket version", [(b"Sec-WebSocket-Version", b"13")])
    if request.header("host") is None:
        raise BadRequest(400, "Missing header 'Host'")
    key = request.header("sec-websocket-key")
    if key is None:
        raise BadRequest(400, "Missing header 'Sec-WebSocket-Key'")
    try:
        decoded = base64.b64decode(key, validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != 16:
        raise BadRequest(400, "Invalid header 'Sec-WebSocket-Key'")
    return key.encode("ascii")


def _check_headers(headers: Sequence[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        if not name or not _TOKEN_CHARS.issuperset(name):
            raise ValueError(f"invalid header name {name!r}")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise ValueError(f"invalid value for header {name!r}")


def _render_headers(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    _check_headers(headers)
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


# --------------------------------------------------------------------------- frames

_HEADER_16: Final = struct.Struct("!BBH").pack
_HEADER_64: Final = struct.Struct("!BBQ").pack


def build_frame(payload: bytes, *, text: bool) -> bytes:
    """Build one complete server-to-client frame: FIN, opcode, length, payload.

    Unmasked and unfragmented, so the same bytes can be written to every
    client that uses the same codec. Pure; copies ``payload`` once.
    """
    first = 0x81 if text else 0x82
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return _HEADER_16(first, 126, length) + payload
    return _HEADER_64(first, 127, length) + payload


# --------------------------------------------------------------------------- handshake


async def reject_websocket(
    stream: trio.abc.Stream,
    status_code: int,
    body: str = "",
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer the request with an HTTP error response and close ``stream``.

    Used for refused WebSocket handshakes (400, 426, 503 when full, ...) and
    for any request the listener refuses before hand-off. The body is sent as
    ``text/plain``; the connection is closed after it (``Connection: close``).

    Blocks until the response is written; the caller applies its deadline.
    The stream is closed on every exit, also when cancelled. Transport errors
    are swallowed: the peer is gone, which is fine for a rejection.
    """
    payload = body.encode("utf-8")
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = ""
    response = b"".join(
        [
            f"HTTP/1.1 {status_code} {phrase}\r\n".encode("ascii"),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % len(payload),
            b"Connection: close\r\n",
            _render_headers(headers),
            b"\r\n",
            payload,
        ]
    )
    try:
        await stream.send_all(response)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def _select_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    # The client lists its preference first (RFC 6455 section 4.1), so honour its order.
    for candidate in offered:
        if candidate in supported:
            return candidate
    return None


async def accept_websocket(
    stream: trio.abc.Stream,
    request: RequestHead,
    *,
    subprotocols: Sequence[str] = (),
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> WebSocketConnection:
    """Complete the opening handshake and return the open connection.

    ``subprotocols`` lists what the server supports; the first one the client
    offered that is in it is chosen (None when there is no match or no offer;
    the connection is accepted either way). No extension (compression) is ever
    negotiated: prepared frames must be identical for every client.
    ``request.trailing`` (frames the client sent right behind its request) is
    fed to the connection and will be returned by `receive_message`.

    ``max_message_size`` bounds inbound messages in bytes; ``close_timeout``
    bounds the closing handshake and control-frame writes (see `aclose`).

    To accept and close straight away (e.g. an invalid client id), call
    ``await ws.aclose(4400, "Invalid client id")`` on the result.

    Blocks until the 101 response is written; the caller applies its write
    deadline. If ``request`` is not a valid upgrade, answers 400/426 like
    `reject_websocket` and raises ``ConnectionClosed(1002)``; on transport
    errors raises ``ConnectionClosed(1006)``. Either way ``stream`` is closed.
    """
    try:
        key = check_websocket_upgrade(request)
    except BadRequest as error:
        await reject_websocket(stream, error.status_code, error.message, headers=error.headers)
        raise ConnectionClosed(_PROTOCOL_ERROR, f"handshake rejected: {error.message}") from None
    subprotocol = _select_subprotocol(request.subprotocols, subprotocols)
    accept = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
    parts = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        b"Sec-WebSocket-Accept: " + accept + b"\r\n",
    ]
    if subprotocol is not None:
        parts.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n")
    parts.append(_render_headers(extra_headers))
    parts.append(b"\r\n")
    connection = WebSocketConnection(
        stream,
        request,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )
    await connection._send_handshake(b"".join(parts))
    return connection


# --------------------------------------------------------------------------- connection


class _EventQueue(list[Event]):
    """wsproto's ``Connection`` keeps its pending events in a deque, which allocates a
    64-slot block (about 600 bytes) up front; every connection holds one, nearly always
    empty. This list does the same job (``append``, ``popleft``, truth) in 56 bytes.
    wsproto is pinned (pyproject) because this relies on how it uses ``_events``."""

    __slots__ = ()

    def popleft(self) -> Event:
        return self.pop(0)


class WebSocketConnection:
    """An open server-side WebSocket; create it with `accept_websocket`.

    Concurrency contract: at most one task in `receive_message` (the reader)
    and at most one in `send_frames` (the writer) at a time; `ping` and
    `aclose` may be called from any task at any time. All writes are
    serialized by one lock, so control frames never split a data write.

    Public attributes (read-only for users):

    * ``request`` -- the `RequestHead` of the upgrade (``request.header("origin")``,
      ``request.header("authorization")``, ...).
    * ``subprotocol`` -- the negotiated subprotocol, or None.
    * ``pongs_received`` / ``last_pong`` -- count of pongs received and the
      `trio.current_time` of the latest (None before the first). Updated by
      `receive_message`, so a reader must be running for a heartbeat to see them.
    * ``close_code`` / ``close_reason`` -- the first close frame sent (or
      being sent) or received, 1006 if the transport broke first; None and
      ``""`` while open.
    """

    __slots__ = (
        "_backlog",
        "_broken",
        "_close_timeout",
        "_closed",
        "_closed_event",
        "_fd",
        "_fragments",
        "_fragments_size",
        "_max_message_size",
        "_proto",
        "_reading",
        "_send_lock",
        "_stream",
        "close_code",
        "close_reason",
        "last_pong",
        "pongs_received",
        "request",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        request: RequestHead,
        *,
        subprotocol: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        """Wrap a stream whose handshake is complete; prefer `accept_websocket`."""
        self._stream = stream
        self._proto = Connection(ConnectionType.SERVER, None, request.trailing)
        self._proto._events = _EventQueue(self._proto._events)  # type: ignore[assignment]
        self._send_lock = trio.Lock()
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        # Fragments of the message being reassembled; kept on the object (not
        # in receive_message's frame) so a cancelled receive loses nothing.
        self._fragments: list[str | bytes] | None = None
        self._fragments_size = 0
        # A task is inside receive_some: only one may read at a time.
        self._reading = False
        # A write failed or was cancelled: nothing more may be written.
        self._broken = False
        # The transport is closed (or being closed): the connection is over.
        self._closed = False
        # Created only when a task must wait for another one to finish closing.
        self._closed_event: trio.Event | None = None
        # The socket for try_send_frames, or -1 when the stream is not a plain
        # socket (TLS): those connections always write through send_frames.
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        # Bytes try_send_frames could not write at once; the next _write sends
        # them first (they may end in the middle of a frame).
        self._backlog: bytes | memoryview | None = None
        self.request = request
        self.subprotocol = subprotocol
        self.pongs_received = 0
        self.last_pong: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._proto.state.name.lower()
        return f"<WebSocketConnection {self.request.path!r} from {self.remote_address} {state}>"

    @property
    def path(self) -> str:
        """The raw request path, e.g. ``/ws/client-123``."""
        return self.request.path

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The client's ``(host, port)``, when the listener knew it."""
        return self.request.client

    @property
    def closed(self) -> bool:
        """True once the connection is over (the transport is closed)."""
        return self._closed

    # ------------------------------------------------------------------ receiving

    async def receive_message(self) -> str | bytes:
        """Wait for the next complete message: `str` for text, `bytes` for binary.

        Answers pings and records pongs along the way. Cancel-safe: a
        cancelled call (e.g. a heartbeat timeout) loses no data; a message
        being reassembled is kept for the next call.

        Raises `ConnectionClosed`:

        * with the peer's code after the peer's close frame (the close is
          echoed and the transport closed first);
        * 1009 when a message grows beyond ``max_message_size``, counted as
          fragments arrive, so at most one receive buffer beyond the limit is
          ever held;
        * 1002 / 1007 on protocol errors or invalid UTF-8 in text;
        * 1006 when the transport breaks without a close frame;
        * the code of our own close once `aclose` has closed the connection.

        In the error cases our close frame is sent and the peer's reply awaited
        for at most ``close_timeout``, shielded from cancellation.
        """
        proto = self._proto
        while True:
            if self._closed:
                raise self._closed_error()
            for event in proto.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    if proto.state is not ConnectionState.OPEN:
                        continue  # We sent our close: RFC 6455 lets us discard data.
                    message = await self._add_fragment(event.data, event.message_finished)
                    if message is not None:
                        return message
                elif isinstance(event, Ping):
                    await self._send_control(event.response())
                elif isinstance(event, Pong):
                    self.pongs_received += 1
                    self.last_pong = trio.current_time()
                elif isinstance(event, CloseConnection):
                    await self._on_close_frame(event)
            # Reading is inlined rather than a helper: an idle connection sits
            # here, and every coroutine frame in its task costs memory.
            if self._reading:
                # aclose() in another task is draining the peer's close: wait
                # for it rather than reading concurrently (trio forbids that).
                await self._wait_closed()
                raise self._closed_error()
            self._reading = True
            try:
                if self._fd < 0:
                    data = await self._stream.receive_some(_RECEIVE_SIZE)
                else:
                    # A plain socket is waited on and read directly: four coroutine
                    # frames fewer than SocketStream.receive_some for every idle
                    # connection. Closing the stream wakes the wait (ClosedResourceError).
                    await trio.lowlevel.wait_readable(self._fd)
                    try:
                        data = os.read(self._fd, _RECEIVE_SIZE)
                    except BlockingIOError:
                        continue
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                await self._close_transport()
                raise self._closed_error() from exc
            finally:
                self._reading = False
            if not data:
                await self._close_transport()
                raise self._closed_error()
            proto.receive_data(data if isinstance(data, bytes) else bytes(data))

    async def _add_fragment(
        self, data: str | bytes | bytearray, finished: bool
    ) -> str | bytes | None:
        """Count and keep one fragment; return the whole message once finished."""
        if isinstance(data, str):
            # JSON is nearly always ASCII, and str.isascii() is O(1) in CPython.
            size = len(data) if data.isascii() else len(data.encode("utf-8"))
        else:
            size = len(data)
        total = self._fragments_size + size
        if total > self._max_message_size:
            self._fragments = None
            self._fragments_size = 0
            await self._fail(
                _MESSAGE_TOO_BIG, f"Message exceeds {self._max_message_size} bytes", parsing=True
            )
        fragments = self._fragments
        if finished:
            if fragments is None:
                return bytes(data) if isinstance(data, bytearray) else data
            fragments.append(bytes(data) if isinstance(data, bytearray) else data)
            self._fragments = None
            self._fragments_size = 0
            if isinstance(data, str):
                return "".join(fragments)  # type: ignore[arg-type]  # all str: one message
            return b"".join(fragments)  # type: ignore[arg-type]  # all bytes: one message
        if fragments is None:
            self._fragments = [bytes(data) if isinstance(data, bytearray) else data]
        else:
            fragments.append(bytes(data) if isinstance(data, bytearray) else data)
        self._fragments_size = total
        return None

    async def _on_close_frame(self, event: CloseConnection) -> None:
        """Handle a close event from wsproto; always raises `ConnectionClosed`."""
        state = self._proto.state
        if state is ConnectionState.OPEN:
            # wsproto reports its own parse failures as a close event without
            # leaving OPEN: code 1002 (protocol error) or 1007 (bad UTF-8).
            await self._fail(event.code, event.reason or "", parsing=False)
        if self.close_code is None:
            self.close_code = event.code
            self.close_reason = event.reason or ""
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: echo its code.
            # If the transport is already gone, it is closed below all the same.
            with trio.move_on_after(self._close_timeout, shield=True), suppress(ConnectionClosed):
                await self._send_control(event.response())
        # Either way the handshake is complete; RFC 6455 has the server close TCP first.
        await self._close_transport()
        raise self._closed_error()

    async def _fail(self, code: int, reason: str, *, parsing: bool) -> None:
        """Close from the reader after a violation; always raises `ConnectionClosed`.

        ``parsing`` tells whether wsproto can still parse the input (False
        after a parse failure), i.e. whether the peer's close can be seen.
        """
        with trio.move_on_after(self._close_timeout, shield=True):
            try:
                await self._send_close(code, reason)
            except ConnectionClosed:
                pass
            else:
                # Read until the peer's close: closing a socket with unread
                # input makes the kernel send RST, which can destroy our close
                # frame before the client reads it.
                await self._drain(parsing=parsing)
        await self._close_transport()
        raise self._closed_error()

    async def _drain(self, *, parsing: bool = True) -> None:
        """Read and discard until the peer's close frame, EOF or error.

        The caller bounds it. Runs as the (only) reader. With ``parsing``
        False the bytes are dropped unparsed, so only EOF ends it early.
        """
        proto = self._proto
        self._reading = True
        try:
            while not self._closed and proto.state is not ConnectionState.CLOSED:
                for event in proto.events():
                    if isinstance(event, CloseConnection):
                        if self.close_code is None:  # pragma: no cover - we sent ours first
                            self.close_code = event.code
                            self.close_reason = event.reason or ""
                        return
                    if isinstance(event, Pong):
                        self.pongs_received += 1
                        self.last_pong = trio.current_time()
                try:
                    data = await self._stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if not data:
                    return
                if parsing:
                    proto.receive_data(data if isinstance(data, bytes) else bytes(data))
        finally:
            self._reading = False

    # ------------------------------------------------------------------ sending

    async def send_frames(self, data: bytes | bytearray | memoryview) -> None:
        """Write already-built data frames (see `build_frame`) with one ``send_all``.

        ``data`` may join any number of complete frames; the backlog of
        `try_send_frames` goes first (``data`` may be empty to write just that).
        Blocks while the peer does not read (TCP backpressure): the caller
        applies its write deadline. A cancelled write closes the transport at once (part of a
        frame may be on the wire, so the byte stream is unusable): the reader
        then gets ``ConnectionClosed(1006)`` and no close frame can be sent.

        Raises ``ConnectionClosed`` once a close frame was sent or received,
        or on transport errors (1006).
        """
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._closed or self._broken or self._proto.state is not ConnectionState.OPEN:
                raise self._closed_error()
            await self._write(data)
        finally:
            lock.release()

    def try_send_frames(self, data: bytes) -> bool:
        """Write already-built data frames now, without blocking or yielding.

        Returns True when ``data`` was taken: all written, or partly written
        with the rest kept as the backlog (see `backlogged`) that the next
        locked write -- `send_frames` or a control frame -- sends first; the
        caller must then make sure a `send_frames` follows.

        Returns False, having written nothing, when that is not possible now:
        another write holds the lock, a backlog is waiting, the stream is not a
        plain socket (TLS), the connection is not open, or the socket just
        failed. Pass ``data`` to `send_frames` instead, which waits its turn
        or raises ``ConnectionClosed``.
        """
        if (
            self._fd < 0
            or self._backlog is not None
            or self._send_lock.locked()
            or self._closed
            or self._broken
            or self._proto.state is not ConnectionState.OPEN
        ):
            return False
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            self._broken = True  # reset by the peer: send_frames reports it
            return False
        if written < len(data):
            self._backlog = memoryview(data)[written:]
        return True

    @property
    def direct(self) -> bool:
        """True when `try_send_frames` can write at all: a plain socket, not TLS."""
        return self._fd >= 0

    @property
    def backlogged(self) -> bool:
        """True while bytes taken by `try_send_frames` wait for `send_frames`."""
        return self._backlog is not None

    async def send_message(self, message: str | bytes) -> None:
        """Send one message built on the spot: text for `str`, binary for `bytes`.

        Convenience for per-connection replies; fan-out should share frames
        from `build_frame` via `send_frames`. Same contract as `send_frames`.
        """
        if isinstance(message, str):
            await self.send_frames(build_frame(message.encode("utf-8"), text=True))
        else:
            await self.send_frames(build_frame(message, text=False))

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping frame (at most 125 bytes of payload).

        The pong shows up in ``pongs_received`` / ``last_pong`` once the
        reader has processed it. Waits for the writer's current ``send_all``
        to finish (cancellable meanwhile); the frame write itself is bounded by
        ``close_timeout``. Raises ``ConnectionClosed`` when closing or closed.
        """
        if len(payload) > 125:
            raise ValueError("ping payload must be at most 125 bytes")
        if not await self._send_control(Ping(payload=payload)):
            raise self._closed_error()

    async def _send_handshake(self, response: bytes) -> None:
        """Write the 101 response; no other task knows the connection yet."""
        try:
            await self._write(response)
        except ConnectionClosed:
            await self._close_transport()
            raise

    async def _send_close(self, code: int, reason: str) -> None:
        """Send our close frame unless one was already sent; raises `ConnectionClosed`
        if the transport is broken or closed."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        await self._send_control(CloseConnection(code=code, reason=reason))

    async def _send_control(self, event: Ping | Pong | CloseConnection) -> bool:
        """Generate and write one control frame under the send lock.

        Returns False (writing nothing) when the state no longer allows it:
        pings and pongs only while open, one close frame per connection.
        Waiting for the lock is cancellable; the write itself is shielded and
        bounded by ``close_timeout``, because a control write torn by a
        heartbeat timeout would break an otherwise healthy connection.
        Raises ``ConnectionClosed`` if the transport is closed or broken.
        """
        async with self._send_lock:
            if self._closed or self._broken:
                raise self._closed_error()
            state = self._proto.state
            if isinstance(event, CloseConnection):
                if state not in _CLOSE_ALLOWED:
                    return False
            elif state is not ConnectionState.OPEN:
                return False
            data = self._proto.send(event)
            with trio.move_on_after(self._close_timeout, shield=True):
                await self._write(data)
                return True
            # The peer stopped reading so long that a tiny frame could not be
            # written: treat it as dead.
            self._broken = True
            await self._close_transport()
            raise self._closed_error()

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all`` with errors translated; the caller holds the lock (or is alone).

        Writes the backlog of `try_send_frames` first."""
        written = False
        try:
            if self._backlog is not None:
                await self._stream.send_all(self._backlog)
                self._backlog = None
            if data:
                await self._stream.send_all(data)
            written = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._broken = True
            await self._close_transport()
            raise self._closed_error() from exc
        finally:
            if not written and not self._closed:
                # Cancelled: part of a frame may be on the wire, so the byte
                # stream is unusable. Closing never blocks, even when cancelled.
                self._broken = True
                await self._close_transport()

    # ------------------------------------------------------------------ closing

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket with ``code`` and ``reason``, then the transport.

        Sends our close frame unless a close frame was already sent, waits for
        the peer's reply, then closes the stream. The whole handshake is
        bounded by ``close_timeout`` and shielded from cancellation (it is
        cleanup), so it returns promptly even against a peer that neither reads
        nor answers, and also runs in an already-cancelled scope. If another
        task is the reader, it receives the reply and this call waits for it.

        Idempotent; never raises `ConnectionClosed`.
        """
        if self._closed:
            return
        with trio.move_on_after(self._close_timeout, shield=True):
            try:
                await self._send_close(code, reason)
            except ConnectionClosed:
                pass
            else:
                if self._proto.state is not ConnectionState.CLOSED:
                    if self._reading:
                        await self._wait_closed()
                    else:
                        await self._drain()
        await self._close_transport()

    async def abort(self) -> None:
        """Close the transport now, without a closing handshake.

        Never blocks and also works in a cancelled scope. Blocked readers and
        writers of this connection get `ConnectionClosed` (1006 unless a close
        frame was already exchanged). Idempotent.
        """
        self._broken = True
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
            self.close_reason = "Connection lost"
        if not self._closed:
            self._closed = True
            if self._closed_event is not None:
                self._closed_event.set()
        # Forceful: after the WebSocket closing handshake there is nothing
        # left to say, and a TLS close_notify could block on a dead peer.
        await trio.aclose_forcefully(self._stream)

    async def _wait_closed(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._closed_event is None:
            self._closed_event = trio.Event()
        await self._closed_event.wait()

    def _closed_error(self) -> ConnectionClosed:
        code = self.close_code if self.close_code is not None else ABNORMAL_CLOSURE
        return ConnectionClosed(code, self.close_reason)
