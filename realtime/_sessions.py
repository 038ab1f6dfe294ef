"""WebSocket sessions: accept, read and answer each connection; heartbeats; drain.

Theory of operation
-------------------
The listener hands each ``/ws/{client_id}`` upgrade to :meth:`Sessions.handle`,
which refuses it with 403 when its ``Origin`` is not allowed (``_origins``), accepts
it (or closes it at once with 4400 for a bad client id), authenticates it when a key
is configured, registers the connection's :class:`_Session` -- its outlet, see
``_delivery`` -- with the hub, offers ``welcome``, and then reads in the handler's
own task.

Authentication (docs/security.md) happens before the connection joins the hub: the
token comes from the upgrade's ``Authorization: Bearer`` header or from a first
``auth`` message awaited for ``--auth-timeout``; a refused one gets ``unauthorized``
and 4401. The verified :class:`~realtime._auth.Claims` stay on the session, and its
``sub`` is the connection's user (with authentication off every connection is the
demo user's, :data:`feeds.DEMO_USER`): what per-user events reach, and whose client
id it holds. Before it joins the hub, a connection whose client id another user's
connection holds is refused (4409: ids are scoped to their user, so nobody can take
over, or receive the messages of, another user's id), and so is one past
``--max-connections-per-user`` (4429; on a node of a cluster, counted across it by
:attr:`Sessions.seats`, the only await between authentication and the hub). Its
``exp`` is the deadline of the session's read scope, so the reader itself ends at
expiry (4401) with no timer of its own, and a refresh (an ``auth`` on the open
connection) moves it. Grants are checked at subscribe and at refresh, where what a
new token no longer allows is ended; delivery never looks at them. Each inbound message
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

A resume can outrun a cluster node: cut from node A right after A delivered seq N,
a client may resume here with ``since`` N before this node has received N from
Redis. Such a resume (same epoch, ``since`` past the hub's position) waits, in the
reader's own task and under its read scope, for the hub to reach ``since``
(:meth:`Hub.notify_at`), at most ``resume_wait`` seconds (for all of the
connection's resumes together), and is then answered as any other: replayed, or
refused with ``history_unavailable``. No task and no timer of its own: the reader
reads nothing meanwhile, so the connection's later requests are answered after it,
in order, and a close the server decides still ends it.
Live messages of the connection's other subscriptions keep flowing (the delivery
writes them). With the in-process bus (``resume_wait`` 0) the hub numbers every
message itself, so a ``since`` past it was never given, and is refused at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import typing
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Final

import attrs
import trio

from feeds import DEMO_USER
from protocol import (
    ALL_SYMBOLS,
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    Auth,
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
    RequestId,
    ServerMessage,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_client,
    encode,
)

from ._auth import Claims, TokenError, TokenVerifier
from ._cluster import Membership
from ._config import Config
from ._delivery import Delivery, Outlet
from ._hub import Hub, utc_now
from ._logs import describe_peer, peer_fields
from ._origins import OriginPolicy
from ._outbox import Outbox, OutboxLimits
from ._throttle import ThrottledLog
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
_CLOSE_CODES: Final = frozenset(CloseCode)
_PREFIX: Final = "/ws/"
_SUBPROTOCOLS: Final = (Codec.MSGPACK.subprotocol, Codec.JSON.subprotocol)
#: A time before any clock's now (one object shared by every session).
_LONG_AGO: Final = -math.inf


def client_id_from_path(path: str) -> str | None:
    """The client id of ``/ws/{client_id}`` (query string ignored), or None if invalid."""
    client_id = path.partition("?")[0].removeprefix(_PREFIX)
    return client_id if _CLIENT_ID.fullmatch(client_id) else None


def _peer(request: RequestHead) -> str:
    client = request.client
    return "unknown" if client is None else f"{client[0]}:{client[1]}"


class _Session(Outlet):
    """One connection: its outlet, the protocol state of its requests, and what its
    token says (``claims``; ``None`` while authentication is off). Its ``user`` is
    the token's ``sub``, or the demo user's while authentication is off."""

    __slots__ = ("claims", "requests", "resumes_until")

    def __init__(
        self,
        ws: WebSocketConnection,
        client_id: str,
        sessions: Sessions,
        now: float,
        claims: Claims | None = None,
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
        self.claims = claims
        self.user = DEMO_USER if claims is None else claims.sub
        #: Until when resumes ahead of the hub may wait (see ``_resume_when_reached``).
        self.resumes_until = _LONG_AGO

    def reply(self, message: ServerMessage) -> None:
        codec = self.codec
        self.offer(build_frame(encode(message, codec), text=codec.is_text))


class Sessions:
    """Serves every WebSocket connection of the gateway against one hub."""

    def __init__(
        self,
        config: Config,
        hub: Hub,
        delivery: Delivery,
        *,
        server_version: str,
        wall_clock: Callable[[], float] = time.time,
        resume_wait: float = 0.0,
    ) -> None:
        self.config = config
        #: Seconds a resume past the hub's position waits for the hub to get there (a
        #: node's hub follows Redis); 0 refuses it at once (see the module docstring).
        self.resume_wait = resume_wait
        #: Unix seconds, what token times (``exp``, ``nbf``) count in.
        self.wall_clock = wall_clock
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
                max_unauthenticated=config.max_unauthenticated,
                limit_loopback=config.limit_loopback,
                forwarded_allow_ips=config.trusted_networks,
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
        #: Sessions opened (welcomed), and how they ended: (code, by) -> count, where
        #: ``by`` is who decided the close (see :meth:`_count_close`).
        self.opened = 0
        self.closes: dict[tuple[str, str], int] = {}
        #: Checks tokens; ``None`` while authentication is off.
        self.verifier: TokenVerifier | None = config.token_verifier()
        #: Whose pages may connect: with no --allowed-origins and authentication off,
        #: pages on this machine too (docs/security.md).
        self.origins = OriginPolicy(
            config.websocket_origins,
            localhost=not config.authentication and not config.websocket_origins,
        )
        #: Handshakes refused with 403 for their Origin.
        self.refused_origins = 0
        #: Connections closed with 4401 (refused or expired tokens), and refreshes refused.
        self.unauthorized = 0
        self.refused_refreshes = 0
        #: Connections refused because another user's connection held their client id
        #: (4409), or their user had --max-connections-per-user open (4429).
        self.refused_client_ids = 0
        self.refused_over_user_limit = 0
        #: Connections closed by :meth:`disconnect` (4403).
        self.disconnected = 0
        #: On a node of a cluster, what counts a user's connections across it: every
        #: authenticated session holds a seat there from admission to close.
        self.seats: Membership | None = None
        #: Refusals, at most a few lines every few seconds however many there are.
        self.refusal_log = ThrottledLog(logger, clock=trio.current_time)

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
        origin = request.header("origin")
        if not self.origins.allows(origin, request.header("host")):
            await self._refuse_origin(stream, request, origin or "")
            return
        # With authentication on, a source may have only so many connections waiting
        # for their token (the exempt loopback has no source).
        source = request.source if self.verifier is not None else None
        if source is not None and not self.sources.begin_authentication(source):
            await self._refuse_unauthenticated(stream, request)
            return
        try:
            session = await self._admit(stream, request)
        finally:
            if source is not None:
                self.sources.end_authentication(source)
        if session is None:
            return
        ws = session.ws
        # The read loop is inlined here: an idle connection's task waits in it, and
        # each coroutine frame on that stack costs every connection about 250 bytes.
        try:
            with session.read_scope:
                while session.close_code is None:
                    # No local keeps the frame or its decoded message while this task
                    # waits for the next one: idle connections hold only their state.
                    ahead = self._on_message(session, await ws.receive_message())
                    if ahead is not None:
                        await self._resume_when_reached(session, ahead)
            # The read scope's deadline is the token's exp (see _expire_at).
            if session.close_code is None and trio.current_time() >= session.read_scope.deadline:
                self._expired(session)
        except ConnectionClosed:
            pass  # the peer is gone
        finally:
            await self._close(session)

    async def _admit(self, stream: trio.abc.Stream, request: RequestHead) -> _Session | None:
        """Accept the upgrade, check the client id, take the token and open the
        session; ``None`` once the connection was refused and closed."""
        ws = await self._accept(stream, request)
        if ws is None:
            return None
        client_id = client_id_from_path(request.path)
        if client_id is None:
            logger.info("[WebSocket] Refused invalid client id in %r", request.path[:100])
            await ws.aclose(
                CloseCode.INVALID_CLIENT_ID,
                "Invalid client id: use 1-64 characters of A-Z a-z 0-9 _ . : -",
            )
            return None
        claims = None
        if self.verifier is not None:
            claims = await self._authenticate(ws, request, client_id, self.verifier)
            if claims is None:
                return None
            if self.draining:  # began while the token was awaited: drain() missed it
                await ws.aclose(CloseCode.GOING_AWAY, "Server shutting down; reconnect")
                return None
        user = DEMO_USER if claims is None else claims.sub
        refusal = self._refusal(request, client_id, user)
        seats = self.seats if claims is not None else None
        if refusal is None and seats is not None:
            limit = self.config.max_connections_per_user
            replaces = self.hub.holder(client_id) is not None
            if not await seats.take_seat(user, client_id, limit, replaces=replaces):
                refusal = self._over_limit(request, client_id, user, " across the cluster")
            else:
                # Checked again: the hub may have changed, or a drain begun (which
                # missed this one), while Redis counted.
                refusal = self._refusal(request, client_id, user)
                if refusal is None and self.draining:
                    refusal = CloseCode.GOING_AWAY, "Server shutting down; reconnect"
                if refusal is not None:
                    seats.free_seat(user)
        # No await between this check and the registration in _open: what the hub
        # holds cannot change in between.
        if refusal is not None:
            await ws.aclose(*refusal)
            return None
        return self._open(ws, client_id, claims)

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

    async def _refuse_origin(
        self, stream: trio.abc.Stream, request: RequestHead, origin: str
    ) -> None:
        self.refused_origins += 1
        self.refusal_log.info("[WebSocket] Refused origin %r from %s", origin[:200], _peer(request))
        with trio.move_on_after(self.config.write_timeout):
            await reject_websocket(
                stream,
                403,
                f"Origin {origin[:200]} may not open a WebSocket on this gateway: "
                "the gateway's --allowed-origins must list it",
            )

    async def _refuse_unauthenticated(self, stream: trio.abc.Stream, request: RequestHead) -> None:
        limit, timeout = self.config.max_unauthenticated, self.config.auth_timeout
        self.refusal_log.info(
            "[WebSocket] Refused an upgrade from %s: %d of its connections are waiting to "
            "authenticate",
            _peer(request),
            limit,
        )
        with trio.move_on_after(self.config.write_timeout):
            await reject_websocket(
                stream,
                429,
                f"{limit} connections from this address are still waiting to authenticate; "
                "retry once they have",
                headers=[(b"Retry-After", b"%d" % math.ceil(timeout))],
            )

    # --- authentication ---------------------------------------------------------------

    async def _authenticate(
        self,
        ws: WebSocketConnection,
        request: RequestHead,
        client_id: str,
        verifier: TokenVerifier,
    ) -> Claims | None:
        """The claims of the connection's token: the ``Authorization: Bearer`` header of
        its upgrade, else its first message, an ``auth`` that must come within
        ``--auth-timeout``. Otherwise writes an ``unauthorized`` error, closes with 4401
        and returns ``None`` (also when the peer left). Before ``welcome``: the
        connection is not in the hub yet."""
        request_id = None
        header = request.header("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                await self._refuse_token(
                    ws, request, client_id, "the Authorization header must be 'Bearer <jwt>'"
                )
                return None
            token = token.strip()
        else:
            try:
                first = await self._first_message(ws)
            except ConnectionClosed:
                await ws.aclose()
                return None
            if isinstance(first, str):
                await self._refuse_token(ws, request, client_id, first)
                return None
            token, request_id = first.token, first.id
        try:
            return verifier.verify(token, now=self.wall_clock())
        except TokenError as error:
            await self._refuse_token(ws, request, client_id, error.reason, request_id)
            return None

    async def _first_message(self, ws: WebSocketConnection) -> Auth | str:
        """The ``auth`` message the connection opens with, or why there is none.
        Raises ``ConnectionClosed`` if the peer left."""
        timeout = self.config.auth_timeout
        data: str | bytes | None = None
        with trio.move_on_after(timeout):
            data = await ws.receive_message()
        if data is None:
            return (
                f"no token: send Authorization: Bearer <jwt> with the upgrade, or "
                f'{{"type":"auth","token":"<jwt>"}} within {timeout:g} s of connecting'
            )
        try:
            message = decode_client(data, Codec.for_subprotocol(ws.subprotocol), self.limits)
        except RemoteProtocolError as error:
            return f"the first message must be an auth message: {error.message}"
        if not isinstance(message, Auth):
            return 'authenticate first: the first message must be {"type":"auth","token":"<jwt>"}'
        return message

    async def _refuse_token(
        self,
        ws: WebSocketConnection,
        request: RequestHead,
        client_id: str,
        reason: str,
        request_id: RequestId | None = None,
    ) -> None:
        self.unauthorized += 1
        self.refusal_log.info(
            "[WebSocket] Authentication failed for %s from %s: %s",
            client_id,
            _peer(request),
            reason,
        )
        codec = Codec.for_subprotocol(ws.subprotocol)
        error = _unauthorized(f"Unauthorized: {reason}", request_id, utc_now())
        with trio.move_on_after(self.config.write_timeout):
            with contextlib.suppress(ConnectionClosed):
                await ws.send_frames(build_frame(encode(error, codec), text=codec.is_text))
        await ws.aclose(CloseCode.UNAUTHORIZED, "Unauthorized")

    def _expire_at(self, session: _Session, claims: Claims) -> None:
        """Close the connection at the token's ``exp``: the read scope's deadline, on
        Trio's clock (so MockClock drives it)."""
        session.read_scope.deadline = trio.current_time() + (claims.exp - self.wall_clock())

    def _expired(self, session: _Session) -> None:
        self.unauthorized += 1
        logger.info("[WebSocket] Token expired: %s (4401)", session.client_id)
        session.reply(
            _unauthorized(
                "Unauthorized: the token expired; connect again with a new one "
                "(refresh it before exp with an auth message to stay connected)",
                None,
                utc_now(),
            )
        )
        session.close(CloseCode.UNAUTHORIZED, "Token expired", flush=True)

    def _refresh(self, session: _Session, request: Auth, timestamp: datetime) -> None:
        """Take a new token on an open connection: same ``sub``, new grants and exp."""
        verifier = self.verifier
        if verifier is None:
            return  # authentication is off: nothing to refresh
        current = session.claims
        try:
            claims = verifier.verify(request.token, now=self.wall_clock())
            if current is not None and claims.sub != current.sub:
                raise TokenError(f"it names another user (sub {claims.sub[:64]!r})")
        except TokenError as error:
            self.refused_refreshes += 1
            self.refusal_log.info(
                "[WebSocket] Refresh refused for %s from %s: %s",
                session.client_id,
                _peer(session.ws.request),
                error.reason,
            )
            session.reply(
                _unauthorized(
                    f"Token refused; the current one still holds until it expires: {error.reason}",
                    request.id,
                    timestamp,
                )
            )
            return
        session.claims = claims
        self._expire_at(session, claims)
        self._narrow(session, claims, timestamp)
        logger.debug("[WebSocket] Client %s refreshed its token", session.client_id)

    def _narrow(self, session: _Session, claims: Claims, timestamp: datetime) -> None:
        """End the subscriptions ``claims`` no longer allow, each with an
        ``unsubscribed`` that says why."""
        requests, hub = session.requests, self.hub
        for channel, selection in list(requests.subscriptions):
            if not claims.allows(channel):
                self._end(
                    session,
                    Unsubscribe(channel=channel),
                    f"Your token no longer grants channel '{channel}'",
                    timestamp,
                )
            elif channel is Channel.PRICES and claims.symbols is not None:
                if selection is ALL_SYMBOLS:
                    granted = hub.canonical(tuple(sorted(claims.symbols & hub.universe)))
                    self._end(
                        session,
                        Unsubscribe(channel=channel),
                        "Your token no longer grants every symbol",
                        timestamp,
                        keep=granted,
                    )
                elif refused := claims.refused_symbols(sorted(selection)):
                    self._end(
                        session,
                        Unsubscribe(channel=channel, symbols=tuple(refused)),
                        f"Your token no longer grants {_symbols_named(refused)}",
                        timestamp,
                    )

    def _end(
        self,
        session: _Session,
        request: Unsubscribe,
        reason: str,
        timestamp: datetime,
        *,
        keep: tuple[str, ...] | None = None,
    ) -> None:
        """Apply ``request`` for the server, then (prices) subscribe ``keep`` again, and
        tell the client with one ``unsubscribed`` carrying ``reason``."""
        requests, hub = session.requests, self.hub
        accepted = requests.unsubscribe(request, timestamp=timestamp)
        hub.apply(session, accepted.change)
        held: Collection[str] = ()
        if keep:
            try:
                again = requests.subscribe(
                    Subscribe(channel=request.channel, symbols=keep),
                    universe=hub.universe,
                    timestamp=timestamp,
                )
            except RemoteProtocolError:
                pass  # more than --max-symbols: the channel stays ended
            else:
                hub.apply(session, again.change)
                held = keep
        if request.channel is Channel.PRICES:
            # A price offered before this may still be pending: none may follow the
            # unsubscribed for what it ended.
            old = accepted.change.old
            if isinstance(old, frozenset):
                session.drop_prices(old.difference(held))
            else:
                session.drop_prices(hub.universe.difference(held) if held else None)
        session.reply(
            Unsubscribed(
                channel=request.channel,
                symbols=tuple(sorted(held)) if held else accepted.change.ack_symbols,
                reason=reason,
                timestamp=timestamp,
            )
        )
        logger.info(
            "[WebSocket] Client %s unsubscribed from %s: %s",
            session.client_id,
            request.channel,
            reason,
        )

    # --- connections --------------------------------------------------------------

    def _refusal(
        self, request: RequestHead, client_id: str, user: str
    ) -> tuple[CloseCode, str] | None:
        """Why ``user``'s connection with ``client_id`` may not join the hub (the close
        code and reason), or ``None``: another user's connection holds the id, or
        ``user`` has as many connections as one user may (with authentication on)."""
        holder = self.hub.holder(client_id)
        if holder is not None and holder.user != user:
            self.refused_client_ids += 1
            self.refusal_log.info(
                "[WebSocket] Refused %s for user %s from %s: another user's connection "
                "holds that client id (4409)",
                client_id,
                user[:64],
                _peer(request),
            )
            return CloseCode.REPLACED, "Client id in use by another user: choose another"
        if self.verifier is None:
            return None  # every connection is the demo user's: no per-user limit
        # A connection that replaces its own older one (4409) adds none.
        if (
            self.hub.connection_count_of(user) - (holder is not None)
            >= self.config.max_connections_per_user
        ):
            return self._over_limit(request, client_id, user, "")
        return None

    def _over_limit(
        self, request: RequestHead, client_id: str, user: str, where: str
    ) -> tuple[CloseCode, str]:
        """Count, log and say why ``user`` may open no more connections (``where``: ``""``
        for this process's count, ``" across the cluster"`` for Redis's)."""
        limit = self.config.max_connections_per_user
        self.refused_over_user_limit += 1
        self.refusal_log.info(
            "[WebSocket] Refused %s for user %s from %s: %d connections open%s, the most "
            "one user may have (--max-connections-per-user; 4429)",
            client_id,
            user[:64],
            _peer(request),
            limit,
            where,
        )
        return (
            CloseCode.RATE_LIMITED,
            f"Too many connections for this user (at most {limit}): close one first",
        )

    def disconnect(self, *, user: str | None = None, client_id: str | None = None) -> list[str]:
        """Close with 4403 every connection of ``user``, or the connection holding
        ``client_id`` (given both: that one, if it is ``user``'s); the client ids closed.
        Clients do not reconnect after 4403 on their own. Never blocks.

        Raises ``ValueError`` when neither is given.
        """
        hub = self.hub
        if client_id is not None:
            holder = hub.holder(client_id)
            found = [] if holder is None or user not in (None, holder.user) else [holder]
        elif user is not None:
            found = hub.connections_of(user)
        else:
            raise ValueError("disconnect whom? give a user or a client id")
        closed = []
        for outbox in found:
            if outbox.close_code is None:
                outbox.close(CloseCode.FORBIDDEN, "Disconnected by the gateway's administrator")
                closed.append(outbox.client_id)
                logger.info(
                    "[WebSocket] Disconnecting %s (user %s) by request (4403)",
                    outbox.client_id,
                    (outbox.user or "")[:64],
                )
        self.disconnected += len(closed)
        return sorted(closed)

    def _open(self, ws: WebSocketConnection, client_id: str, claims: Claims | None) -> _Session:
        """Register the connection with the hub and offer its welcome."""
        config, hub = self.config, self.hub
        now = trio.current_time()
        source = ws.request.source
        tokens = None if source is None else self.sources.tokens_for(source, now)
        session = _Session(ws, client_id, self, now, claims, tokens)
        if hub.register(session) is not None:
            logger.info("[WebSocket] Replaced older connection of %s (4409)", client_id)
        channels: tuple[Channel, ...] = tuple(Channel)
        symbols = hub.symbols
        # The spec's line, and the peer after it (docs/gateway.md, "Logs").
        request = ws.request
        peer = peer_fields(self.sources, request.client, request.header("x-forwarded-for"))
        if claims is None:
            logger.info(
                "[WebSocket] Connected: %s from %s",
                client_id,
                describe_peer(peer),
                extra={"client_id": client_id, **peer},
            )
        else:
            logger.info(
                "[WebSocket] Connected: %s (user %s) from %s",
                client_id,
                claims.sub,
                describe_peer(peer),
                extra={"client_id": client_id, "user": claims.sub, **peer},
            )
            self._expire_at(session, claims)
            channels = tuple(channel for channel in channels if claims.allows(channel))
            if claims.symbols is not None:
                symbols = tuple(symbol for symbol in symbols if symbol in claims.symbols)
        session.reply(
            Welcome(
                client_id=client_id,
                protocol=PROTOCOL_VERSION,
                server=self.server_version,
                channels=channels,
                symbols=symbols,
                heartbeat_interval=config.heartbeat_interval,
                epoch=hub.epoch,
                timestamp=utc_now(),
            )
        )
        if not self._sessions:
            self._idle = trio.Event()
        self._sessions.add(session)
        self.opened += 1
        return session

    async def _close(self, session: _Session) -> None:
        """Leave the hub and close the connection, once its reader has ended."""
        self.hub.unregister(session, session.requests.unsubscribe_all())
        if self.seats is not None and session.claims is not None:
            self.seats.free_seat(session.claims.sub)
        source = session.ws.request.source
        if source is not None:
            now = trio.current_time()
            self.sources.leave(source, session.requests.tokens(now), now)
        try:
            await self.delivery.finish(session)
            self._count_close(session)
            self._log_close(session)
        finally:
            # Idle only once every session has finished closing, not when the last
            # one left the hub: a drain must not end while closes are in flight.
            self._sessions.discard(session)
            if not self._sessions:
                self._idle.set()

    def _count_close(self, session: _Session) -> None:
        """Count the close under its code and who decided it: ``server`` for a close the
        server decided (its code even when the close frame could not be written) or an
        abort, else ``client`` (its close frame's code, 1006 when it just left). Codes
        outside ``CloseCode`` count as ``other``: a client picks any 3000-4999, and
        each would be a series of its own."""
        if session.close_code is not None:
            code, by = session.close_code, "server"
        elif session.aborted is not None:
            code, by = CloseCode.ABNORMAL_CLOSURE, "server"
        else:
            code, by = session.ws.close_code or CloseCode.ABNORMAL_CLOSURE, "client"
        key = (str(int(code)) if code in _CLOSE_CODES else "other", by)
        self.closes[key] = self.closes.get(key, 0) + 1

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
                "[WebSocket] Disconnected: %s (aborted: %s)",
                session.client_id,
                session.aborted,
                extra={"client_id": session.client_id},
            )
            return
        code, reason = session.ws.close_code, session.ws.close_reason
        logger.info(
            "[WebSocket] Disconnected: %s (code %s%s)",
            session.client_id,
            code,
            f", {reason}" if reason else "",
            extra={"client_id": session.client_id, "code": code},
        )

    # --- requests ---------------------------------------------------------------------

    def _on_message(self, session: _Session, data: str | bytes) -> Subscribe | None:
        """Answer one inbound message; synchronous, so the hub sees it whole. Returns
        a resume that must first wait for the hub to reach its ``since``, unanswered."""
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
        elif isinstance(outcome, Auth):
            self._refresh(session, outcome, timestamp)
        else:
            return self._apply(session, outcome, timestamp)
        return None

    async def _resume_when_reached(self, session: _Session, request: Subscribe) -> None:
        """Wait until the hub reaches the ``since`` of ``request`` (a resume), then
        answer it: replayed, or refused if the hub is still behind. A connection's
        resumes wait at most ``resume_wait`` seconds in all, counted from the first: a
        client resuming every channel on a node that is far behind is answered within
        the bound, not once per channel. Cancelled with the reader's scope."""
        channel, since = request.channel, typing.cast(int, request.since)
        now = trio.current_time()
        if session.resumes_until < now:
            session.resumes_until = now + self.resume_wait
        logger.info(
            "[WebSocket] Client %s resumes %s after seq %d, which this node has not "
            "received yet (it is at %d): waiting up to %.3g s",
            session.client_id,
            channel,
            since,
            self.hub.position(channel),
            session.resumes_until - now,
        )
        reached = trio.Event()
        wake = reached.set
        self.hub.notify_at(channel, since, wake)
        try:
            with trio.move_on_at(session.resumes_until):
                await reached.wait()
        finally:
            self.hub.cancel_notify(channel, wake)
        self._apply(session, request, utc_now(), waited=True)

    def _apply(
        self,
        session: _Session,
        request: Subscribe | Unsubscribe,
        timestamp: datetime,
        *,
        waited: bool = False,
    ) -> Subscribe | None:
        """Apply a (un)subscribe and answer it. Returns, unanswered, a resume past the
        hub's position that may wait for it (``waited``: it did already)."""
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
                return None
            channel = request.channel
            if session.claims is not None:
                request = _within_grants(session.claims, request, hub.universe)
            replay = None
            # The ack's position: what follows it on the channel is exactly what comes
            # after. Prices have none: they resume by their snapshot.
            seq = None
            if channel is not Channel.PRICES:
                if request.since is None:
                    seq = hub.position(channel)
                else:
                    if self._ahead(request):
                        if not waited:
                            return request
                        raise RemoteProtocolError(
                            ErrorCode.HISTORY_UNAVAILABLE,
                            f"This server has not received seq {request.since} of "
                            f"'{channel}' yet (it is at {hub.position(channel)}; resumes "
                            f"wait at most {self.resume_wait:g} s for it): subscribe without "
                            "'since' and resync, or reconnect and resume again",
                        )
                    replay = hub.replay(
                        channel,
                        request.since,
                        request.epoch or "",
                        session.client_id,
                        session.user,
                    )
                    seq = request.since
            if request.symbols is not None:
                request = attrs.evolve(request, symbols=hub.canonical(request.symbols))
            accepted = requests.subscribe(
                request, universe=hub.universe, timestamp=timestamp, seq=seq
            )
        except RemoteProtocolError as error:  # refused by the subscription state or history
            session.reply(requests.refuse(request, error, timestamp=timestamp).message)
            return None
        hub.apply(session, accepted.change)
        session.reply(accepted.reply)
        if channel is Channel.PRICES:
            hub.offer_snapshot(session, request.symbols)
        elif replay:
            requests.charge_replay(len(replay))
            for frames in replay:
                session.offer(frames.get(session.codec))
        logger.info("[WebSocket] Client %s subscribed to %s", session.client_id, channel)
        return None

    def _ahead(self, request: Subscribe) -> bool:
        """Whether ``request``, a resume, names a position of this history that the
        hub has not reached yet, and may wait for it (a node's hub)."""
        return (
            self.resume_wait > 0
            and request.epoch == self.hub.epoch
            and typing.cast(int, request.since) > self.hub.position(request.channel)
        )


def _unauthorized(text: str, request_id: RequestId | None, timestamp: datetime) -> ErrorReply:
    return ErrorReply(
        error=text, code=ErrorCode.UNAUTHORIZED.value, id=request_id, timestamp=timestamp
    )


_NAMED: Final = 10  # symbols one message names


def _symbols_named(symbols: list[str]) -> str:
    named = ", ".join(symbols[:_NAMED])
    more = f" and {len(symbols) - _NAMED} more" if len(symbols) > _NAMED else ""
    return f"symbol{'s' if len(symbols) > 1 else ''} {named}{more}"


def _within_grants(claims: Claims, request: Subscribe, universe: Collection[str]) -> Subscribe:
    """``request`` as the token allows it: refused whole (``forbidden``, naming what)
    for a channel or symbols it does not grant; a prices subscribe without symbols is
    narrowed to the granted symbols of the universe."""
    channel = request.channel
    if not claims.allows(channel):
        raise RemoteProtocolError(
            ErrorCode.FORBIDDEN, f"Forbidden: your token does not grant channel '{channel}'"
        )
    granted = claims.symbols
    if channel is not Channel.PRICES or granted is None:
        return request
    if request.symbols is None:
        symbols = tuple(sorted(granted.intersection(universe)))
        if not symbols:
            raise RemoteProtocolError(
                ErrorCode.FORBIDDEN, "Forbidden: your token grants no symbol of this feed"
            )
        return attrs.evolve(request, symbols=symbols)
    refused = claims.refused_symbols(request.symbols)
    if refused:
        raise RemoteProtocolError(
            ErrorCode.FORBIDDEN, f"Forbidden: your token does not grant {_symbols_named(refused)}"
        )
    return request
