"""An open server-side WebSocket on a Trio stream, with wsproto underneath.

Theory of operation
-------------------
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
connection; wsproto's objects are about 1.6 KB of it and the `trio.Lock` 0.2 KB.
"""

from __future__ import annotations

import io
import math
import os
from contextlib import suppress
from typing import Final

import attrs
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from protocol import CloseCode

from ._frames import build_frame
from ._head import RequestHead

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_INBOUND_LIMITS",
    "ConnectionClosed",
    "InboundLimits",
    "WebSocketConnection",
]

DEFAULT_CLOSE_TIMEOUT: Final = 2.0


@attrs.frozen
class InboundLimits:
    """What a peer's frames may cost the server, beyond their payload. One object is
    shared by every connection. A breach closes the connection: 1009 for a message
    too big in bytes or in fragments, 1008 for control frames sent too often."""

    #: Largest message, in payload bytes, counted as its fragments arrive.
    max_message_size: int = 64 * 1024
    #: Most frames one message may arrive in: each costs a parse and an event,
    #: whatever its payload, and empty continuation frames cost nothing else.
    max_fragments: int = 256
    #: Pings and pongs a peer may send per second, and in a burst above that.
    control_rate: float = 10.0
    control_burst: int = 50


DEFAULT_INBOUND_LIMITS: Final = InboundLimits()

# One receive_some per wake-up; also the most raw bytes wsproto ever buffers
# beyond the message-size limit before the limit is checked, and so the most that a
# connection closed mid-chunk leaves unparsed inside wsproto, whose connection object
# is a reference cycle freed only by the garbage collector (which `realtime serve`
# runs rarely): with 64 KiB reads, connections closed for too many fragments held
# 64 KiB each until then, 180 MB after 2,600 of them. Requests are small.
_RECEIVE_SIZE: Final = 4 * 1024

# After a close for a violation, what the peer still sends is read until its close
# frame shows, but at most _DRAIN_FRAMES frames are parsed for it, and past
# _DRAIN_BYTES the transport is closed: a peer still sending is not listening, and
# parsing each of its frames (32,000 fragments of two bytes, a ping flood) kept a core
# busy for the whole closing handshake.
_DRAIN_FRAMES: Final = 64
_DRAIN_BYTES: Final = 1024 * 1024

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
        "_control_tokens",
        "_control_updated",
        "_early",
        "_fd",
        "_fragment_count",
        "_fragments",
        "_fragments_size",
        "_limits",
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
        limits: InboundLimits = DEFAULT_INBOUND_LIMITS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        """Wrap a stream whose handshake is complete; prefer `accept_websocket`."""
        self._stream = stream
        self._proto = Connection(ConnectionType.SERVER)
        # Fed to wsproto by receive_message as if read (request.trailing may be a
        # whole 64 KiB read of the listener's).
        self._early = request.trailing
        self._send_lock = trio.Lock()
        self._limits = limits
        self._close_timeout = close_timeout
        # The message being reassembled, in one buffer (not an object per
        # fragment); kept on the object, not in receive_message's frame, so a
        # cancelled receive loses nothing.
        self._fragments: io.StringIO | bytearray | None = None
        self._fragments_size = 0
        self._fragment_count = 0
        # The token bucket of inbound control frames; full before the first.
        self._control_tokens = 0.0
        self._control_updated = -math.inf
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
        * 1009 when a message grows beyond ``limits.max_message_size``, counted
          as fragments arrive (so at most one receive buffer beyond the limit is
          ever held), or arrives in more than ``limits.max_fragments`` frames;
        * 1008 when pings and pongs come faster than ``limits.control_rate``
          (burst ``limits.control_burst``);
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
                    message = await self._add_fragment(
                        event.data, event.frame_finished, event.message_finished
                    )
                    if message is not None:
                        return message
                elif isinstance(event, Ping):
                    await self._count_control_frame()
                    await self._send_control(event.response())
                elif isinstance(event, Pong):
                    await self._count_control_frame()
                    self.pongs_received += 1
                    self.last_pong = trio.current_time()
                elif isinstance(event, CloseConnection):
                    await self._on_close_frame(event)
            early = self._early
            if early:
                # The bytes that came with the request, a read's worth at a time.
                self._early = early[_RECEIVE_SIZE:]
                proto.receive_data(early[:_RECEIVE_SIZE])
                continue
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
        self, data: str | bytes | bytearray, frame_finished: bool, finished: bool
    ) -> str | bytes | None:
        """Keep one piece of a message, counting the frames that end; return the whole
        message once finished. (wsproto hands out a frame's payload as it arrives, so
        a large frame comes in several pieces: one frame, not several.)"""
        if isinstance(data, str):
            # JSON is nearly always ASCII, and str.isascii() is O(1) in CPython.
            size = len(data) if data.isascii() else len(data.encode("utf-8"))
        else:
            size = len(data)
        limits = self._limits
        total = self._fragments_size + size
        count = self._fragment_count + frame_finished
        if total > limits.max_message_size or count > limits.max_fragments:
            self._fragments = None
            self._fragments_size = self._fragment_count = 0
            reason = (
                f"Message exceeds {limits.max_message_size} bytes"
                if total > limits.max_message_size
                else f"Message arrives in more than {limits.max_fragments} frames"
            )
            await self._fail(CloseCode.MESSAGE_TOO_BIG, reason, parsing=True)
        fragments = self._fragments
        if finished and fragments is None:
            return bytes(data) if isinstance(data, bytearray) else data  # unfragmented
        if fragments is None:
            fragments = self._fragments = io.StringIO() if isinstance(data, str) else bytearray()
        if isinstance(fragments, io.StringIO):
            assert isinstance(data, str)  # wsproto keeps a message's frames of one kind
            fragments.write(data)
        else:
            assert not isinstance(data, str)
            fragments += data
        if not finished:
            self._fragments_size, self._fragment_count = total, count
            return None
        self._fragments = None
        self._fragments_size = self._fragment_count = 0
        return fragments.getvalue() if isinstance(fragments, io.StringIO) else bytes(fragments)

    async def _count_control_frame(self) -> None:
        """Take a token for an inbound ping or pong; close with 1008 when none is left."""
        limits, now = self._limits, trio.current_time()
        tokens = min(
            float(limits.control_burst),
            self._control_tokens + (now - self._control_updated) * limits.control_rate,
        )
        self._control_updated = now
        if tokens < 1:
            self._control_tokens = tokens
            await self._fail(
                CloseCode.POLICY_VIOLATION,
                f"More than {limits.control_rate:g} pings and pongs per second",
                parsing=True,
            )
        self._control_tokens = tokens - 1

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
        """Read and discard until the peer's close frame, EOF or error, or until
        ``_DRAIN_BYTES`` were read.

        The caller bounds it in time. Runs as the (only) reader. Frames are parsed
        for the peer's close, ``_DRAIN_FRAMES`` at most; past them, and with
        ``parsing`` False, the bytes are dropped unparsed, so only EOF or the byte
        bound ends it early.
        """
        proto = self._proto
        frames = read = 0
        self._reading = True
        try:
            while not self._closed and proto.state is not ConnectionState.CLOSED:
                if parsing:
                    for event in proto.events():
                        if isinstance(event, CloseConnection):
                            if self.close_code is None:  # pragma: no cover - we sent ours first
                                self.close_code = event.code
                                self.close_reason = event.reason or ""
                            return
                        if isinstance(event, Pong):
                            self.pongs_received += 1
                            self.last_pong = trio.current_time()
                        frames += 1
                        if frames >= _DRAIN_FRAMES:
                            parsing = False
                            break
                try:
                    data = await self._stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                read += len(data)
                if not data or read > _DRAIN_BYTES:
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

    async def _close_transport(self) -> None:
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL_CLOSURE
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
        code = self.close_code if self.close_code is not None else CloseCode.ABNORMAL_CLOSURE
        return ConnectionClosed(code, self.close_reason)
