"""WebSocket sessions: one per connection, a reader (this task) and a writer task.

Theory of operation
-------------------
The listener hands each ``/ws/{client_id}`` upgrade to :meth:`Sessions.handle`,
which accepts it (or closes it at once with 4400 for a bad client id), registers
the connection's :class:`Outbox` with the hub, offers ``welcome``, and then runs:

* the reader, in the handler's own task: each inbound message passes the rate
  limiter, is decoded by ``protocol`` and applied (subscription changes go to the
  hub and the ack, snapshot or replay to the outbox, all without awaiting, so the
  hub sees each request atomically). Bad input gets an ``error`` reply.
* the writer, one task: waits for the outbox and writes everything pending with
  one ``send_all``. It sets no timer of its own: a wake-up per message must stay
  cheap, and a cancel scope per write cost more than the write.

One watchdog task serves every connection instead (:meth:`Sessions.run_watchdog`):
each tick it aborts a connection whose current write began more than the write
deadline ago, and every heartbeat interval it queues a ping frame for each connection
that was silent (no message, no pong) for an interval, and closes with 1011 those
silent for ``heartbeat_misses + 1`` intervals. Deadlines are so kept to within one
tick.

Whichever of reader and writer ends first ends the other. Every close the server
decides (slow consumer, replaced, going away, rate limit, heartbeat) is recorded on
the outbox; the writer flushes if asked, and the handler sends the close frame,
bounded by the close timeout. A write past its deadline aborts the connection
without a close frame.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from typing import Final

import trio

from protocol import (
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    Channel,
    ClientMessage,
    Codec,
    ErrorCode,
    ErrorReply,
    Limits,
    Ping,
    Pong,
    RemoteProtocolError,
    ServerMessage,
    Subscribe,
    Subscribed,
    Subscriptions,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_client,
    encode,
)

from ._config import Config
from ._hub import Hub, utc_now
from ._outbox import SLOW_CONSUMER, Outbox, OutboxLimits
from ._websocket import (
    ConnectionClosed,
    RequestHead,
    WebSocketConnection,
    accept_websocket,
    build_frame,
    reject_websocket,
)

logger = logging.getLogger("realtime.websocket")

_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)
_PREFIX: Final = "/ws/"
_SUBPROTOCOLS: Final = (Codec.MSGPACK.subprotocol, Codec.JSON.subprotocol)
_STRIKE_WINDOW: Final = 60.0

GOING_AWAY: Final = 1001
INTERNAL_ERROR: Final = 1011
INVALID_CLIENT_ID: Final = 4400
RATE_LIMITED: Final = 4429


def client_id_from_path(path: str) -> str | None:
    """The client id of ``/ws/{client_id}`` (query string ignored), or None if invalid."""
    client_id = path.partition("?")[0].removeprefix(_PREFIX)
    return client_id if _CLIENT_ID.fullmatch(client_id) else None


class _RateLimiter:
    """A token bucket per connection, plus the recent breaches ("strikes")."""

    __slots__ = ("strikes", "tokens", "updated")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.updated = now
        self.strikes: deque[float] | None = None  # allocated on the first breach

    def allow(self, now: float, rate: float, burst: int) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def strike(self, now: float, limit: int) -> bool:
        """Record a breach; True when ``limit`` breaches fell within a minute."""
        if self.strikes is None:
            self.strikes = deque(maxlen=limit)
        self.strikes.append(now)
        return len(self.strikes) == limit and now - self.strikes[0] <= _STRIKE_WINDOW


#: An unmasked ping frame with no payload; the peer's pong shows in ``ws.last_pong``.
_PING_FRAME: Final = b"\x89\x00"


class _Session:
    """The state of one connection that its reader, writer and the watchdog share."""

    __slots__ = (
        "client_id",
        "codec",
        "heard",
        "outbox",
        "scope",
        "subscriptions",
        "write_timed_out",
        "writing_since",
        "ws",
    )

    def __init__(self, ws: WebSocketConnection, client_id: str, config: Config) -> None:
        self.ws = ws
        self.client_id = client_id
        self.codec = Codec.for_subprotocol(ws.subprotocol)
        self.outbox: Outbox
        self.subscriptions = Subscriptions(config.max_symbols)
        #: When the peer was last heard from (any message), on Trio's clock.
        self.heard = trio.current_time()
        #: When the write in progress began; None between writes.
        self.writing_since: float | None = None
        self.write_timed_out = False
        #: Cancels the connection's reader and writer.
        self.scope: trio.CancelScope | None = None

    def reply(self, message: ServerMessage) -> None:
        codec = self.codec
        self.outbox.offer(build_frame(encode(message, codec), text=codec.is_text))


class Sessions:
    """Serves every WebSocket connection of the gateway against one hub."""

    def __init__(self, config: Config, hub: Hub, *, server_version: str) -> None:
        self.config = config
        self.hub = hub
        self.server_version = server_version
        self.draining = False
        self._limits = Limits(
            max_message_size=config.max_message_size, max_symbols=config.max_symbols
        )
        self._outbox_limits = OutboxLimits(config.outbox_messages, config.outbox_bytes)
        self._sessions: set[_Session] = set()
        self._idle = trio.Event()
        self._idle.set()
        self.messages_sent = 0
        self.rate_limited = 0
        self.write_timeouts = 0
        self.heartbeat_timeouts = 0

    # --- lifecycle ------------------------------------------------------------------

    def drain(self) -> None:
        """Refuse new connections and close every open one with 1001 after its
        pending messages. Never blocks; see :meth:`wait_idle`."""
        self.draining = True
        for outbox in self.hub.outboxes():
            outbox.close(GOING_AWAY, "Server shutting down; reconnect", flush=True)

    async def wait_idle(self) -> None:
        """Block until no connection is open."""
        await self._idle.wait()

    async def run_watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Enforce write deadlines and heartbeats for every connection, until cancelled.

        Ticks every ``min(1 s, write_timeout / 4, heartbeat_interval / 4)``, so each
        deadline holds to within a quarter of itself.
        """
        config = self.config
        tick = min(1.0, config.write_timeout / 4, config.heartbeat_interval / 4)
        next_ping = trio.current_time() + config.heartbeat_interval
        task_status.started()
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for session in list(self._sessions):
                since = session.writing_since
                if since is not None and now - since > config.write_timeout and session.scope:
                    session.write_timed_out = True
                    session.scope.cancel()  # the cancelled write closes the transport
            if now >= next_ping:
                next_ping = now + config.heartbeat_interval
                self._heartbeat(now)

    def _heartbeat(self, now: float) -> None:
        interval, timeout = self.config.heartbeat_interval, self.config.heartbeat_timeout
        for session in self._sessions:
            outbox = session.outbox
            silent = now - max(session.heard, session.ws.last_pong or 0.0)
            if silent > timeout:
                if outbox.close_code is None:
                    self.heartbeat_timeouts += 1
                    outbox.close(INTERNAL_ERROR, "Heartbeat timeout: no pong received")
            elif silent >= interval:
                # Only a peer that said nothing for a whole interval is asked: one heard
                # from since is alive, and a ping it does not need can cross its close.
                outbox.offer(_PING_FRAME)

    async def handle(self, stream: trio.abc.Stream, request: RequestHead) -> None:
        """Serve one upgrade request until the connection ends. Never raises for the
        peer's behaviour; the listener closes ``stream`` afterwards in any case."""
        if self.draining:
            await reject_websocket(
                stream, 503, "Server is shutting down; reconnect", headers=[(b"Retry-After", b"1")]
            )
            return
        ws = await self._accept(stream, request)
        if ws is None:
            return
        client_id = client_id_from_path(request.path)
        if client_id is None:
            logger.info("[WebSocket] Refused invalid client id in %r", request.path[:100])
            await ws.aclose(
                INVALID_CLIENT_ID,
                "Invalid client id: use 1-64 characters of A-Z a-z 0-9 _ . : -",
            )
            return
        await self._serve(ws, client_id)

    async def _accept(
        self, stream: trio.abc.Stream, request: RequestHead
    ) -> WebSocketConnection | None:
        # A function of its own so the handshake's cancel scope does not live on in
        # the handler's frame for the whole connection.
        with trio.move_on_after(self.config.write_timeout):
            try:
                return await accept_websocket(
                    stream,
                    request,
                    subprotocols=_SUBPROTOCOLS,
                    max_message_size=self.config.max_message_size,
                )
            except ConnectionClosed:
                return None
        return None

    async def _serve(self, ws: WebSocketConnection, client_id: str) -> None:
        config, hub = self.config, self.hub
        session = _Session(ws, client_id, config)
        outbox = session.outbox = Outbox(client_id, session.codec, self._outbox_limits)
        if hub.register(outbox) is not None:
            logger.info("[WebSocket] Replaced older connection of %s (4409)", client_id)
        logger.info("[WebSocket] Connected: %s", client_id)
        session.reply(
            Welcome(
                client_id=client_id,
                protocol=PROTOCOL_VERSION,
                server=self.server_version,
                channels=tuple(Channel),
                symbols=hub.symbols,
                heartbeat_interval=config.heartbeat_interval,
                epoch=hub.epoch,
                timestamp=utc_now(),
            )
        )
        if not self._sessions:
            self._idle = trio.Event()
        self._sessions.add(session)
        try:
            async with trio.open_nursery() as nursery:
                session.scope = nursery.cancel_scope
                nursery.start_soon(self._write, session)
                if await self._read(session):
                    # The peer is gone: nothing more can be written.
                    nursery.cancel_scope.cancel()
                # Otherwise the server decided to close: the writer flushes what the
                # close keeps (e.g. the rate_limited errors before a 4429), then ends
                # the connection; the watchdog bounds that write like any other.
        finally:
            if session.write_timed_out:
                self.write_timeouts += 1
                logger.warning(
                    "[WebSocket] Write timed out after %ss: %s; aborted",
                    config.write_timeout,
                    client_id,
                )
            hub.unregister(
                outbox, [session.subscriptions.unsubscribe(c) for c, _ in session.subscriptions]
            )
            if outbox.close_code is not None:
                await ws.aclose(outbox.close_code, outbox.close_reason)
            else:
                await ws.aclose()
            self._log_close(session)
            # Idle only once every session has finished closing, not when the last
            # one left the hub: a drain must not end while closes are in flight.
            self._sessions.discard(session)
            if not self._sessions:
                self._idle.set()

    def _log_close(self, session: _Session) -> None:
        outbox = session.outbox
        if outbox.close_code == SLOW_CONSUMER:
            logger.warning(
                "[WebSocket] Slow consumer closed: %s (%s)", session.client_id, outbox.close_reason
            )
        code, reason = session.ws.close_code, session.ws.close_reason
        logger.info(
            "[WebSocket] Disconnected: %s (code %s%s)",
            session.client_id,
            code,
            f", {reason}" if reason else "",
        )

    # --- writer -----------------------------------------------------------------------

    async def _write(self, session: _Session) -> None:
        """Write what the outbox holds until it is closed; then end the connection."""
        ws, outbox = session.ws, session.outbox
        try:
            while True:
                await outbox.wait()
                frames = outbox.take()
                if frames:
                    session.writing_since = trio.current_time()
                    await ws.send_frames(b"".join(frames))
                    session.writing_since = None
                    self.messages_sent += len(frames)
                elif outbox.close_code is not None:
                    return
        except ConnectionClosed:
            return
        finally:
            if session.scope is not None:
                session.scope.cancel()

    # --- reader -----------------------------------------------------------------------

    async def _read(self, session: _Session) -> bool:
        """Handle inbound messages until the peer closes (returns True) or the server
        decides to close the connection (returns False)."""
        ws, outbox = session.ws, session.outbox
        limiter = _RateLimiter(self.config.rate_burst, trio.current_time())
        while outbox.close_code is None:
            try:
                # No local keeps the frame or its decoded message while this task
                # waits for the next one: idle connections hold only their state.
                self._on_message(session, limiter, await ws.receive_message())
            except ConnectionClosed:
                return True
        return False

    def _on_message(self, session: _Session, limiter: _RateLimiter, data: str | bytes) -> None:
        config, outbox = self.config, session.outbox
        now = session.heard = trio.current_time()
        if not limiter.allow(now, config.rate_limit, config.rate_burst):
            self.rate_limited += 1
            if limiter.strike(now, config.rate_strikes):
                # Flushed: the client sees the rate_limited errors that led here.
                outbox.close(RATE_LIMITED, "Rate limit exceeded repeatedly", flush=True)
                return
            session.reply(
                _error(
                    ErrorCode.RATE_LIMITED,
                    f"Rate limit exceeded: at most {config.rate_limit:g} messages per "
                    f"second (burst {config.rate_burst}); this message was dropped",
                    None,
                )
            )
            return
        try:
            message = decode_client(data, session.codec, self._limits)
        except RemoteProtocolError as exc:
            if exc.close_code is not None:
                outbox.close(exc.close_code, exc.message)
            else:
                session.reply(_error(exc.code, exc.message, exc.request_id))
            return
        try:
            self._apply(session, message)
        except RemoteProtocolError as exc:  # refused by the subscription state or history
            session.reply(_error(exc.code, exc.message, message.id))

    def _apply(self, session: _Session, message: ClientMessage) -> None:
        """Apply one request; synchronous, so the hub sees it whole."""
        hub, outbox = self.hub, session.outbox
        if isinstance(message, Ping):
            session.reply(Pong(id=message.id, timestamp=utc_now()))
        elif isinstance(message, Subscribe):
            channel = message.channel
            replay = None
            if message.since is not None and channel is not Channel.PRICES:
                replay = hub.replay(channel, message.since, message.epoch or "", session.client_id)
            change = session.subscriptions.subscribe(
                channel, hub.canonical(message.symbols), universe=hub.universe
            )
            hub.apply(outbox, change)
            session.reply(
                Subscribed(
                    channel=channel, symbols=change.ack_symbols, id=message.id, timestamp=utc_now()
                )
            )
            if channel is Channel.PRICES:
                hub.offer_snapshot(outbox, message.symbols)
            elif replay:
                for frames in replay:
                    outbox.offer(frames.get(session.codec))
            logger.info("[WebSocket] Client %s subscribed to %s", session.client_id, channel)
        elif isinstance(message, Unsubscribe):
            change = session.subscriptions.unsubscribe(message.channel, message.symbols)
            hub.apply(outbox, change)
            session.reply(
                Unsubscribed(
                    channel=message.channel,
                    symbols=change.ack_symbols,
                    id=message.id,
                    timestamp=utc_now(),
                )
            )
            logger.info(
                "[WebSocket] Client %s unsubscribed from %s", session.client_id, message.channel
            )


def _error(code: ErrorCode, text: str, request_id: str | int | None) -> ErrorReply:
    return ErrorReply(error=text, code=code.value, id=request_id, timestamp=utc_now())
