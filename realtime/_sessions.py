"""WebSocket sessions: accept, read and answer each connection; heartbeats; drain.

Theory of operation
-------------------
The listener hands each ``/ws/{client_id}`` upgrade to :meth:`Sessions.handle`,
which accepts it (or closes it at once with 4400 for a bad client id), registers the
connection's :class:`_Session` -- its outlet, see ``_delivery`` -- with the hub,
offers ``welcome``, and then reads in the handler's own task. Each inbound message
goes to the connection's sans-IO :class:`protocol.RequestHandler` (rate limit,
decoding, subscription state, replies), and what it asks for is done here without
awaiting: subscription changes go to the hub, and the ack, snapshot or replay to the
outbox, so the hub sees each request atomically. Writing is the delivery's business.
A connection's request bucket starts with what its source IP's earlier connections
left (:attr:`Sessions.sources`, which the listener also admits connections with), and
leaves its own there when it closes: reconnecting does not refill it.

One watchdog task (:meth:`Sessions.run`) keeps the heartbeat: every heartbeat
interval it offers a ping frame to each connection that was silent (no message, no
pong) for an interval, and closes with 1011 those silent for ``heartbeat_misses + 1``
intervals.

Every close the server decides (slow consumer, replaced, going away, rate limit,
heartbeat) is recorded on the outbox and ends the reader; the handler then has the
delivery write what a flushing close kept and the close frame.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Final

import attrs
import trio

from protocol import (
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    Channel,
    Close,
    CloseCode,
    Codec,
    ErrorCode,
    ErrorReply,
    Limits,
    RateLimit,
    RemoteProtocolError,
    Reply,
    RequestHandler,
    ServerMessage,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    Welcome,
    encode,
)

from ._config import Config
from ._delivery import Delivery, Outlet
from ._hub import Hub, utc_now
from ._outbox import Outbox, OutboxLimits
from .ws import (
    PING_FRAME,
    ConnectionClosed,
    InboundLimits,
    RequestHead,
    SourceLimits,
    SourceTable,
    WebSocketConnection,
    accept_websocket,
    build_frame,
    reject_websocket,
)

logger = logging.getLogger("realtime.websocket")

_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)
_PREFIX: Final = "/ws/"
_SUBPROTOCOLS: Final = (Codec.MSGPACK.subprotocol, Codec.JSON.subprotocol)


def client_id_from_path(path: str) -> str | None:
    """The client id of ``/ws/{client_id}`` (query string ignored), or None if invalid."""
    client_id = path.partition("?")[0].removeprefix(_PREFIX)
    return client_id if _CLIENT_ID.fullmatch(client_id) else None


class _Session(Outlet):
    """One connection: its outlet, and the protocol state of its requests."""

    __slots__ = ("requests",)

    def __init__(
        self,
        ws: WebSocketConnection,
        client_id: str,
        sessions: Sessions,
        now: float,
        tokens: float | None = None,
    ) -> None:
        super().__init__(ws, client_id, sessions.outbox_limits, sessions.delivery)
        self.requests = RequestHandler(
            codec=self.codec,
            limits=sessions.limits,
            rate_limit=sessions.rate_limit,
            now=now,
            tokens=tokens,
        )

    def reply(self, message: ServerMessage) -> None:
        codec = self.codec
        self.offer(build_frame(encode(message, codec), text=codec.is_text))


class Sessions:
    """Serves every WebSocket connection of the gateway against one hub."""

    def __init__(
        self, config: Config, hub: Hub, delivery: Delivery, *, server_version: str
    ) -> None:
        self.config = config
        self.hub = hub
        self.delivery = delivery
        self.server_version = server_version
        self.draining = False
        self.limits = Limits(
            max_message_size=config.max_message_size, max_symbols=config.max_symbols
        )
        self.rate_limit = RateLimit(
            rate=config.rate_limit,
            burst=config.rate_burst,
            strikes=config.rate_strikes,
            replayed_per_token=config.rate_replayed,
        )
        self.outbox_limits = OutboxLimits(config.outbox_messages, config.outbox_bytes)
        #: The listener's limits per source IP; sessions carry their request buckets
        #: over through it, so that reconnecting does not refill them.
        self.sources = SourceTable(
            SourceLimits(
                connect_rate=config.connect_rate,
                connect_burst=config.connect_burst,
                request_rate=config.rate_limit,
                request_burst=config.rate_burst,
                max_sources=config.max_sources,
                limit_loopback=config.limit_loopback,
                trusted_proxies=config.trusted_networks,
            )
        )
        self.inbound_limits = InboundLimits(
            max_message_size=config.max_message_size,
            max_fragments=config.max_fragments,
            control_rate=config.control_rate,
            control_burst=config.control_burst,
        )
        self._sessions: set[_Session] = set()
        self._idle = trio.Event()
        self._idle.set()
        self.rate_limited = 0
        self.heartbeat_timeouts = 0

    # --- lifecycle ------------------------------------------------------------------

    def drain(self) -> None:
        """Refuse new connections and close every open one with 1001 after its
        pending messages. Never blocks; see :meth:`wait_idle`."""
        self.draining = True
        for outbox in self.hub.outboxes():
            outbox.close(CloseCode.GOING_AWAY, "Server shutting down; reconnect", flush=True)

    async def wait_idle(self) -> None:
        """Block until no connection is open."""
        await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the heartbeat of every connection, until cancelled."""
        task_status.started()
        interval = self.config.heartbeat_interval
        while True:
            await trio.sleep(interval)
            self._heartbeat(trio.current_time())

    def _heartbeat(self, now: float) -> None:
        interval, timeout = self.config.heartbeat_interval, self.config.heartbeat_timeout
        for session in list(self._sessions):
            silent = now - max(session.requests.heard, session.ws.last_pong or 0.0)
            if silent >= timeout:
                if session.close_code is None:
                    self.heartbeat_timeouts += 1
                    session.close(CloseCode.INTERNAL_ERROR, "Heartbeat timeout: no pong received")
            elif silent >= interval:
                # Only a peer that said nothing for a whole interval is asked: one heard
                # from since is alive, and a ping it does not need can cross its close.
                session.offer(PING_FRAME)

    @staticmethod
    def subscriptions_of(outbox: Outbox) -> Subscriptions | None:
        """The subscription state of a connection the hub holds (``None`` for an outbox
        that is not one of these sessions): what its requests left it subscribed to."""
        return outbox.requests.subscriptions if isinstance(outbox, _Session) else None

    # --- connections ----------------------------------------------------------------

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
                CloseCode.INVALID_CLIENT_ID,
                "Invalid client id: use 1-64 characters of A-Z a-z 0-9 _ . : -",
            )
            return
        session = self._open(ws, client_id)
        # The read loop is inlined here: an idle connection's task waits in it, and
        # each coroutine frame on that stack costs every connection about 250 bytes.
        try:
            with session.read_scope:
                while session.close_code is None:
                    # No local keeps the frame or its decoded message while this task
                    # waits for the next one: idle connections hold only their state.
                    self._on_message(session, await ws.receive_message())
        except ConnectionClosed:
            pass  # the peer is gone
        finally:
            await self._close(session)

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
                    limits=self.inbound_limits,
                )
            except ConnectionClosed:
                return None
        return None

    def _open(self, ws: WebSocketConnection, client_id: str) -> _Session:
        """Register the connection with the hub and offer its welcome."""
        config, hub = self.config, self.hub
        now = trio.current_time()
        source = ws.request.source
        tokens = None if source is None else self.sources.tokens_for(source, now)
        session = _Session(ws, client_id, self, now, tokens)
        if hub.register(session) is not None:
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
        return session

    async def _close(self, session: _Session) -> None:
        """Leave the hub and close the connection, once its reader has ended."""
        self.hub.unregister(session, session.requests.unsubscribe_all())
        source = session.ws.request.source
        if source is not None:
            now = trio.current_time()
            self.sources.leave(source, session.requests.tokens(now), now)
        try:
            await self.delivery.finish(session)
            self._log_close(session)
        finally:
            # Idle only once every session has finished closing, not when the last
            # one left the hub: a drain must not end while closes are in flight.
            self._sessions.discard(session)
            if not self._sessions:
                self._idle.set()

    def _log_close(self, session: _Session) -> None:
        if session.close_code == CloseCode.SLOW_CONSUMER:
            logger.warning(
                "[WebSocket] Slow consumer closed: %s (%s)",
                session.client_id,
                session.close_reason,
            )
        if session.aborted is not None:
            # No close frame was sent or received: the code would say nothing true.
            logger.warning(
                "[WebSocket] Disconnected: %s (aborted: %s)", session.client_id, session.aborted
            )
            return
        code, reason = session.ws.close_code, session.ws.close_reason
        logger.info(
            "[WebSocket] Disconnected: %s (code %s%s)",
            session.client_id,
            code,
            f", {reason}" if reason else "",
        )

    # --- requests ---------------------------------------------------------------------

    def _on_message(self, session: _Session, data: str | bytes) -> None:
        """Answer one inbound message; synchronous, so the hub sees it whole."""
        timestamp = utc_now()
        outcome = session.requests.receive(data, now=trio.current_time(), timestamp=timestamp)
        if isinstance(outcome, Reply):
            message = outcome.message
            if isinstance(message, ErrorReply) and message.code == ErrorCode.RATE_LIMITED:
                self.rate_limited += 1
            session.reply(message)
        elif isinstance(outcome, Close):
            if outcome.code == CloseCode.RATE_LIMITED:
                self.rate_limited += 1
            session.close(outcome.code, outcome.reason, flush=outcome.flush)
        else:
            self._apply(session, outcome, timestamp)

    def _apply(
        self, session: _Session, request: Subscribe | Unsubscribe, timestamp: datetime
    ) -> None:
        hub, requests = self.hub, session.requests
        try:
            if isinstance(request, Unsubscribe):
                accepted = requests.unsubscribe(request, timestamp=timestamp)
                change = accepted.change
                hub.apply(session, change)
                if change.channel is Channel.PRICES:
                    # A price offered before the request may still be pending: it must
                    # not follow the ack.
                    session.drop_prices(
                        change.old - change.new
                        if isinstance(change.old, frozenset) and isinstance(change.new, frozenset)
                        else None
                    )
                session.reply(accepted.reply)
                logger.info(
                    "[WebSocket] Client %s unsubscribed from %s", session.client_id, request.channel
                )
                return
            channel = request.channel
            replay = None
            if request.since is not None and channel is not Channel.PRICES:
                replay = hub.replay(channel, request.since, request.epoch or "", session.client_id)
            if request.symbols is not None:
                request = attrs.evolve(request, symbols=hub.canonical(request.symbols))
            accepted = requests.subscribe(request, universe=hub.universe, timestamp=timestamp)
        except RemoteProtocolError as error:  # refused by the subscription state or history
            session.reply(requests.refuse(request, error, timestamp=timestamp).message)
            return
        hub.apply(session, accepted.change)
        session.reply(accepted.reply)
        if channel is Channel.PRICES:
            hub.offer_snapshot(session, request.symbols)
        elif replay:
            requests.charge_replay(len(replay))
            for frames in replay:
                session.offer(frames.get(session.codec))
        logger.info("[WebSocket] Client %s subscribed to %s", session.client_id, channel)
