"""The Python client of the gateway: one WebSocket, typed messages, reconnect and resume.

Theory of operation
-------------------
:func:`open_client` starts one background task, the *supervisor* (``Client._run``),
and yields the :class:`Client` once the first connection has received ``welcome``.
The first connection is retried with the same backoff as a reconnect (an agent may
start before its gateway), but only for what may succeed later: a refused or lost
connection, a timeout, HTTP 429/502/503/504, a reconnectable close code. What would
fail again is raised at once: :class:`TLSError`, another HTTP status
(:class:`ConnectError`), a fatal close such as 4400 for an invalid id
(:class:`ConnectionClosedError`), :class:`AuthenticationError`; and once the
attempts are spent, the last attempt's error.

The supervisor loops over connections::

    CONNECTING --welcome--> OPEN --close--> reconnectable? --yes--> WAITING --> CONNECTING
        |                                     |                         |
        +--fail--> WAITING (an attempt)       +--no (fatal, 1000)--> DONE  +--attempts spent--> DONE

* CONNECTING: TCP (or TLS), the WebSocket handshake (trio-websocket) and
  ``welcome``, all within ``connect_timeout``.
* OPEN: the subscriptions the client holds are restored first (see below); then
  requests from user tasks are let through, and the connection's reader decodes
  each frame and dispatches it synchronously: a reply whose ``id`` a request is
  waiting for wakes that request; a ``subscribed``/``unsubscribed`` ack updates
  the client's record of what it holds; an event message goes to the inbox.
  A keepalive task sends a WebSocket ping every ``heartbeat_interval`` (from
  ``welcome``) and treats a missing pong as a lost connection (1006).
* On close: codes in :data:`protocol.RECONNECT_CLOSE_CODES` (1001, 1006, 1011,
  4429, 4499) and transport failures lead to WAITING; 1000 ends the client
  cleanly (iteration stops); 4401 (:data:`protocol.REAUTHENTICATE_CLOSE_CODES`)
  leads straight back to CONNECTING once, with a new token (see Tokens below);
  any other code (4400, 4403, 4409, 1002, 1007, 1009) ends it with
  :class:`ConnectionClosedError`, since reconnecting as is would fail again or
  fight a newer connection.
* WAITING sleeps ``Backoff.delay(attempt)``: exponential with full jitter.
  After ``max_attempts`` failed attempts in a row the client ends with
  :class:`ReconnectFailed`. A connection that stayed open ``reset_after``
  seconds resets the count; a shorter one does not, so a server that accepts
  and at once closes cannot keep the client in a tight loop.

Positions: every non-price channel the client holds has a position, the
``(epoch, seq)`` it has everything up to. The ``subscribed`` ack sets it (its
``seq``: what follows the ack on the channel is exactly what has a greater one,
so a channel on which nothing has arrived yet has a position too), and each
message on the channel advances it. A message at or below the position in the
same epoch is a duplicate and is dropped; except ``seq`` 0, which no message of a
stream has: a notice a cluster node sends its own connections (its link to Redis
is down or back, it drains), delivered and moving no position. (A server that sends no ``seq`` in
its ack leaves the channel without a position until its first message.)

Restoring after a reconnect: for every channel the client holds it sends a
``subscribe``; prices with the symbols held (the server sends their last
prices: prices are state and need no replay), other channels with ``since`` and
``epoch`` from their position, so the server replays exactly what was missed.
``history_unavailable`` (another epoch: the gateway restarted or lost its
history; or the window has passed) is answered with a :class:`HistoryGap` event
for the consumer and a plain ``subscribe``, whose ack starts a new position.

Tokens: with ``token`` and/or ``get_token``, each connection sends
``Authorization: Bearer <jwt>`` with its upgrade. The first connection uses
``token`` if given; every later one asks ``get_token`` (without it, ``token`` is
sent again). While a connection is open, a task asks ``get_token`` for the next
token ahead of the current one's ``exp`` (read from the payload, not verified; the
rule is in ``_tokens``) and sends it as an ``auth`` message, which the gateway
answers only if it refuses it (an ``unauthorized`` error echoing the ``auth``'s id,
handed to the consumer); the clock is ``wall_clock`` for "now" and Trio's for the
wait, so MockClock drives it. A close with 4401 (refused or expired) is answered
with one immediate reconnect with a new token from ``get_token``; a second 4401
before any connection was welcomed, a 4401 without ``get_token``, or
``get_token`` failing then, ends the client with :class:`AuthenticationError`. A
provider that fails before a reconnect after another close counts as a failed
attempt; on the first connection it raises at once.

Requests (``subscribe``, ``unsubscribe``, ``ping``) wait for an open connection,
send with a fresh integer ``id`` and wait for the reply with that ``id``; a
request whose connection is lost before its reply is sent again on the next
connection (all three are idempotent). Timeouts belong to the caller.

The inbox is bounded (``buffer_size``): price updates are conflated per symbol
like the server's outbox (a newer price replaces the pending one of its symbol,
keeping its place); any other message that finds the inbox full is dropped and
counted, and the consumer receives a :class:`Lagged` event with the count at the
point where messages went missing. Nothing ever blocks the reader on the
consumer, so a slow consumer never stalls the connection's heartbeats.
"""

from __future__ import annotations

import logging
import math
import random
import re
import ssl
import time
import typing
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from itertools import count
from typing import Final, TypeAlias

import attrs
import trio
import trio_websocket
import wsproto.utilities

from protocol import (
    CHANNEL_EVENTS,
    FATAL_CLOSE_CODES,
    REAUTHENTICATE_CLOSE_CODES,
    Auth,
    Channel,
    ClientMessage,
    CloseCode,
    Codec,
    ErrorCode,
    ErrorReply,
    EventMessage,
    Ping,
    Pong,
    PriceUpdate,
    RemoteProtocolError,
    RequestId,
    ServerMessage,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_server,
    encode,
    should_reconnect,
)

from ._tokens import TokenTimes, token_times

logger = logging.getLogger("realtime.client")

#: Messages the inbox holds for a consumer that is behind (prices conflate within it).
DEFAULT_BUFFER_SIZE: Final = 1024
#: Extra inbox room kept for the client's own events (:class:`Disconnected`, ...),
#: so that a full inbox of data does not hide a reconnect or a history gap.
EVENT_RESERVE: Final = 16
#: Bounds the TCP/TLS connect, the WebSocket handshake and ``welcome``, in seconds.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: Bounds our closing handshake, in seconds.
DEFAULT_CLOSE_TIMEOUT: Final = 2.0
#: Largest server message accepted (trio-websocket closes with 1009 beyond it).
MAX_SERVER_MESSAGE: Final = 4 * 1024 * 1024

#: HTTP statuses that refuse a handshake only for now (draining, at capacity).
_RETRYABLE_STATUS: Final = frozenset({429, 502, 503, 504})
#: What a token may hold to travel in an HTTP header: a JWT is base64url and dots.
_HEADER_SAFE: Final = re.compile(r"[!-~]+")
#: Refresh requests a connection remembers, to recognise the gateway's refusal of one.
_REFRESHES_KEPT: Final = 4

#: ``get_token``: an async function returning a token (a JWT) for the next connection,
#: or for a refresh. Called again each time: it should cache its token until near exp.
TokenProvider: TypeAlias = Callable[[], Awaitable[str]]


# --- errors ------------------------------------------------------------------------


class ClientError(Exception):
    """Base of the client's errors."""


class RequestError(ClientError):
    """The server answered a request with ``error``.

    ``code`` is the reply's machine-readable code (an :class:`ErrorCode` when this
    version knows it, else the string), ``message`` its sentence, ``request_id``
    the request's ``id``.
    """

    def __init__(self, code: ErrorCode | str, message: str, request_id: RequestId | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class ConnectionClosedError(ClientError):
    """The server closed the connection with a code after which the client does not
    reconnect (4400 invalid id, 4403 forbidden, 4409 replaced, 4401, 1002, 1007,
    1009, or 1000 normal closure). ``fatal``: the code is one of
    :data:`protocol.FATAL_CLOSE_CODES`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed by the server: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CLOSE_CODES


class ConnectError(ClientError):
    """A connection attempt failed: refused, timed out, or the handshake was refused
    with ``status_code`` (an HTTP status; None when there was no HTTP answer)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TLSError(ConnectError):
    """The TLS handshake failed: most often the gateway's certificate is not trusted by
    this client (self-signed, or from a private CA: pass ``ssl_context`` one that
    trusts it), has expired, or names another host. Never retried, on the first
    connection or later: the same certificate would fail the same way. ``__cause__``
    is the ``ssl`` module's error, whose ``verify_message`` says which check failed."""


class AuthenticationError(ClientError):
    """The client cannot authenticate, and has stopped: the gateway refused the token
    (4401) and there is no ``get_token`` to ask for another, or refused the new one
    from ``get_token`` too, or ``get_token`` failed (raised, returned no token, took
    longer than ``connect_timeout``) where a new token was needed. The message says
    which, with the gateway's reason (``Unauthorized: expired 12 s ago ...``);
    ``__cause__`` is the provider's exception, if that was it."""


class ReconnectFailed(ClientError):
    """Reconnecting failed ``attempts`` times in a row; the client gave up.
    ``__cause__`` is the last attempt's error."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"gave up reconnecting after {attempts} failed attempts")
        self.attempts = attempts


# --- events for the consumer -------------------------------------------------------


@attrs.frozen
class Lagged:
    """The consumer fell behind: ``missed`` messages (or client events) found the
    inbox full and were dropped here. Prices are conflated first and never counted."""

    missed: int


@attrs.frozen
class Disconnected:
    """The connection ended with ``code`` and will be retried in ``delay`` seconds
    (attempt ``attempt`` of the backoff's ``max_attempts``)."""

    code: int
    reason: str
    attempt: int
    delay: float


@attrs.frozen
class Reconnected:
    """A new connection is open and its subscriptions have been requested again."""

    welcome: Welcome


@attrs.frozen
class HistoryGap:
    """Messages on ``channel`` after ``since`` in ``epoch`` (the client's position:
    the last ``seq`` seen, or where its subscription started if none was) could not
    be replayed after a reconnect: the server no longer holds them, or its history
    was reset (a restart: the new ``welcome`` has another epoch). Some may have been
    published, none will arrive: the subscription was restored without them, so a
    consumer that must not miss any resyncs from elsewhere."""

    channel: Channel
    since: int
    epoch: str


ClientEvent: TypeAlias = Lagged | Disconnected | Reconnected | HistoryGap
#: What iterating a :class:`Client` yields: event messages, unsolicited ``error``
#: replies (e.g. ``rate_limited``), and the client's own events.
Item: TypeAlias = EventMessage | ErrorReply | ClientEvent


# --- backoff -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Backoff:
    """Reconnect policy: exponential backoff with full jitter.

    Attempt ``n`` (1-based) waits a uniformly random time in
    ``[0, min(max_delay, initial * multiplier ** (n - 1))]``: about 2 s at most for
    the first retry, doubling, capped at 30 s. Full jitter spreads the reconnects
    of many clients dropped at once (a server restart) over the whole window.
    """

    initial: float = 2.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    #: Failed attempts in a row before giving up with :class:`ReconnectFailed` (on the
    #: first connection: with that connection's error). 0 never retries.
    max_attempts: int = 10
    #: A connection open at least this long resets the attempt count.
    reset_after: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not (self.initial > 0 and self.multiplier >= 1 and self.max_delay >= self.initial):
            raise ValueError(f"invalid backoff: {self!r}")
        if self.max_attempts < 0 or self.reset_after < 0:
            raise ValueError(f"invalid backoff: {self!r}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay before attempt ``attempt`` (1-based)."""
        exponent = attempt - 1
        # Stop multiplying once past the cap: the power would overflow for large counts.
        if exponent > math.log(self.max_delay / self.initial, self.multiplier or 2) + 1:
            return self.max_delay
        return min(self.max_delay, self.initial * self.multiplier**exponent)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before attempt ``attempt``; ``rand`` returns floats in [0, 1)."""
        return rand() * self.ceiling(attempt)

    def schedule(self, rand: Callable[[], float] = random.random) -> list[float]:
        """Every delay of one run of failed attempts, up to giving up."""
        return [self.delay(n, rand) for n in range(1, self.max_attempts + 1)]


# --- the inbox ---------------------------------------------------------------------


class _PriceSlot:
    """A pending price in the inbox; a newer price of the symbol replaces ``message``."""

    __slots__ = ("message",)

    def __init__(self, message: PriceUpdate) -> None:
        self.message = message


class _LagSlot:
    __slots__ = ("missed",)

    def __init__(self) -> None:
        self.missed = 1


_Slot: TypeAlias = _PriceSlot | _LagSlot | Item


class _Inbox:
    """What the reader hands the consumer; bounded, and ``put`` never blocks.

    Holds at most ``size`` messages, plus :data:`EVENT_RESERVE` client events, plus
    one :class:`Lagged` marker at the end (see the module docstring).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._size = size
        self._items: deque[_Slot] = deque()
        self._prices: dict[str, _PriceSlot] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._end: BaseException | None = None
        self._ended = False
        self.conflated = 0
        self.missed = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        if self._ended:
            return
        if isinstance(item, PriceUpdate):
            slot = self._prices.get(item.symbol)
            if slot is not None:
                slot.message = item
                self.conflated += 1
                return
            slot = _PriceSlot(item)
            if self._append(slot, self._size):
                self._prices[item.symbol] = slot
            return
        limit = self._size if not isinstance(item, ClientEvent) else self._size + EVENT_RESERVE
        self._append(item, limit)

    def _append(self, slot: _Slot, limit: int) -> bool:
        items = self._items
        if len(items) < limit:
            items.append(slot)
            self._lot.unpark_all()
            return True
        self.missed += 1
        last = items[-1] if items else None
        if isinstance(last, _LagSlot):
            last.missed += 1
        else:
            items.append(_LagSlot())
            self._lot.unpark_all()
        return False

    def end(self, error: BaseException | None) -> None:
        """No more items: once drained, ``get`` raises ``error`` (or ends iteration)."""
        if not self._ended:
            self._ended = True
            self._end = error
            self._lot.unpark_all()

    async def get(self) -> Item:
        """The next item; blocks until there is one. Raises the end's error, or
        ``StopAsyncIteration`` after a clean end, once everything was taken."""
        while not self._items:
            if self._ended:
                if self._end is None:
                    raise StopAsyncIteration
                raise self._end
            await self._lot.park()
        await trio.lowlevel.checkpoint()
        if not self._items:  # taken by another consumer meanwhile
            return await self.get()
        slot = self._items.popleft()
        if isinstance(slot, _PriceSlot):
            del self._prices[slot.message.symbol]
            return slot.message
        if isinstance(slot, _LagSlot):
            return Lagged(slot.missed)
        return slot


# --- statistics ----------------------------------------------------------------------


@attrs.frozen
class ClientStatistics:
    """A snapshot of a client's counters."""

    connected: bool
    #: Connections opened after the first one.
    reconnects: int
    #: Server messages decoded (all types).
    received: int
    #: Price updates replaced in the inbox by a newer one of their symbol.
    conflated: int
    #: Items dropped because the inbox was full (each reported in a :class:`Lagged`).
    missed: int
    #: Items waiting in the inbox.
    buffered: int
    #: Frames skipped: unknown message types (as v1 asks) or undecodable ones.
    skipped: int


# --- one connection ------------------------------------------------------------------


class _Pending:
    """A request waiting for its reply."""

    __slots__ = ("done", "lost", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: ServerMessage | None = None
        self.lost = False


class _Connection:
    """An open trio-websocket connection and how to send on it."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        #: Ids of the requests sent and not yet answered, in the order sent: the
        #: server answers every request once, in order (one per pending request).
        self.in_flight: deque[RequestId] = deque()
        #: Ids of the last token refreshes sent: answered only if refused.
        self.refreshes: deque[RequestId] = deque(maxlen=_REFRESHES_KEPT)

    def answered(self, reply_id: RequestId | None) -> RequestId | None:
        """The id of the request a reply answers, or None if it answers none of ours.

        A reply without ``id`` answers the oldest request: an ``error`` the server
        could not tie to its request (``rate_limited``) comes back without one.
        """
        in_flight = self.in_flight
        if reply_id is None:
            return in_flight.popleft() if in_flight else None
        try:
            in_flight.remove(reply_id)
        except ValueError:
            return None
        return reply_id

    async def send(self, message: ClientMessage) -> None:
        """Send one message; raises ``trio_websocket.ConnectionClosed`` once closed."""
        data = encode(message, self.codec)
        await self.ws.send_message(data.decode() if self.codec.is_text else data)


@attrs.frozen
class _Ended:
    """How a connection ended: the close code and reason, and how long it was open."""

    code: int
    reason: str
    uptime: float


class _Restore:
    """A restoring ``subscribe`` sent after a reconnect, by request id."""

    __slots__ = ("channel", "epoch", "since", "symbols")

    def __init__(
        self,
        channel: Channel,
        symbols: frozenset[str] | None,
        since: int | None,
        epoch: str | None,
    ) -> None:
        self.channel = channel
        self.symbols = symbols
        self.since = since
        self.epoch = epoch


# --- the client ------------------------------------------------------------------------


class Client:
    """A connection to the gateway that survives disconnects; see :func:`open_client`.

    Iterate it (``async for item in client``) for event messages, unsolicited
    ``error`` replies and the client's events; at most one task should iterate.
    Requests may be made from any number of tasks.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        codec: Codec,
        backoff: Backoff,
        buffer_size: int,
        connect_timeout: float,
        close_timeout: float,
        ssl_context: ssl.SSLContext | None,
        rng: random.Random,
        token: str | None = None,
        get_token: TokenProvider | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "wss" else 80)
        self._ssl_context = (
            (ssl_context or ssl.create_default_context()) if parts.scheme == "wss" else None
        )
        base = parts.path.rstrip("/")
        if not base.endswith("/ws"):
            base += "/ws"
        self._resource = f"{base}/{urllib.parse.quote(client_id, safe='')}"
        self.url = url
        self.client_id = client_id
        self.codec = codec
        self.backoff = backoff
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._rng = rng
        if token is not None and not _HEADER_SAFE.fullmatch(token):
            raise ValueError("token must be a JWT: printable ASCII without spaces")
        #: The token of the current (or next) connection; refreshes replace it.
        self._token = token
        #: Whether ``token`` was sent once: later connections ask ``get_token``.
        self._token_sent = False
        self._get_token = get_token
        self._wall_clock = wall_clock
        #: Set by a 4401 answered with a new token; cleared by the next ``welcome``.
        self._reauthenticating = False
        #: The gateway's last ``unauthorized`` error on this connection, for the 4401.
        self._unauthorized: str | None = None
        self._inbox = _Inbox(buffer_size)
        self._ids = count(1)
        self._pending: dict[RequestId, _Pending] = {}
        self._restoring: dict[RequestId, _Restore] = {}
        #: What the client holds, per channel: the prices symbols (None: every
        #: symbol), or None for the whole channel. Updated from the server's acks.
        self._held: dict[Channel, frozenset[str] | None] = {}
        #: The position per non-price channel held: the epoch, and the ``seq`` up to
        #: which everything was received (from the ``subscribed`` ack, then messages).
        self._positions: dict[Channel, tuple[str, int]] = {}
        self._started = False
        self._closing = False
        #: Cancels the current connection's tasks (``aclose``, a dead peer).
        self._serve_scope: trio.CancelScope | None = None
        #: Set when the client has ended, for whatever reason.
        self._ended = trio.Event()
        self._connection: _Connection | None = None
        self._ready = trio.Event()
        self._error: ClientError | None = None
        self._done = False
        #: The ``welcome`` of the current (or last) connection.
        self.welcome: Welcome | None = None
        self._reconnects = 0
        self._received = 0
        self._skipped = 0

    # --- public API --------------------------------------------------------------------

    @property
    def subscriptions(self) -> dict[Channel, frozenset[str] | None]:
        """What the client holds and restores after a reconnect: per channel, the
        prices symbols (None: every symbol), or None for a whole channel."""
        return dict(self._held)

    def statistics(self) -> ClientStatistics:
        inbox = self._inbox
        return ClientStatistics(
            connected=self._connection is not None,
            reconnects=self._reconnects,
            received=self._received,
            conflated=inbox.conflated,
            missed=inbox.missed,
            buffered=len(inbox),
            skipped=self._skipped,
        )

    async def subscribe(
        self, channel: Channel | str, symbols: Sequence[str] | None = None
    ) -> Subscribed:
        """Subscribe to ``channel`` (prices: to ``symbols``, or every symbol if None).

        The server decides what a channel is: a name this version does not know is
        sent as is (a newer server may have it) and refused with ``unknown_channel``
        by one that does not.

        Blocks until the server's ``subscribed`` (reconnecting in between if need be).
        Raises :class:`RequestError` on an ``error`` reply (``unknown_channel``,
        ``unknown_symbol``, ``too_many_symbols``, ...), or the client's terminal
        error once it has ended.
        """
        wanted = tuple(symbols) if symbols is not None else None
        name = _channel_name(channel)
        reply = await self._request(lambda rid: Subscribe(channel=name, symbols=wanted, id=rid))
        assert isinstance(reply, Subscribed)
        return reply

    async def unsubscribe(
        self, channel: Channel | str, symbols: Sequence[str] | None = None
    ) -> Unsubscribed:
        """Drop ``symbols`` from prices, or (None) the whole channel; see :meth:`subscribe`."""
        wanted = tuple(symbols) if symbols is not None else None
        name = _channel_name(channel)
        reply = await self._request(lambda rid: Unsubscribe(channel=name, symbols=wanted, id=rid))
        assert isinstance(reply, Unsubscribed)
        return reply

    async def ping(self) -> Pong:
        """Round trip a ``ping``; blocks until the ``pong``. Raises like :meth:`subscribe`."""
        reply = await self._request(lambda rid: Ping(id=rid))
        assert isinstance(reply, Pong)
        return reply

    async def aclose(self) -> None:
        """Close the connection with 1000 and end the client: iteration stops once the
        inbox is drained, requests raise :class:`ConnectionClosedError`.

        Blocks until the closing handshake is over, which the client bounds by its
        ``close_timeout``. Idempotent.
        """
        self._closing = True
        if self._serve_scope is not None:
            # The connection's own task closes it, while trio-websocket's reader
            # still runs to receive the server's reply.
            self._serve_scope.cancel()
            await self._ended.wait()
        elif not self._done:
            self._finish(None)

    async def receive(self) -> Item:
        """The next item (see :data:`Item`); blocks until there is one.

        Raises :class:`ConnectionClosedError`, :class:`ReconnectFailed` once the
        client has ended that way (after every buffered item was taken), and
        ``StopAsyncIteration`` after a normal closure (1000) or :meth:`aclose`.
        """
        return await self._inbox.get()

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        return await self._inbox.get()

    # --- requests ------------------------------------------------------------------------

    async def _wait_open(self) -> _Connection:
        while True:
            if self._error is not None:
                raise self._error
            if self._done:
                raise ConnectionClosedError(CloseCode.NORMAL, "client closed")
            if self._connection is not None:
                return self._connection
            await self._ready.wait()

    async def _request(self, build: Callable[[RequestId], ClientMessage]) -> ServerMessage:
        while True:
            connection = await self._wait_open()
            request_id = next(self._ids)
            pending = self._pending[request_id] = _Pending()
            connection.in_flight.append(request_id)
            try:
                try:
                    await connection.send(build(request_id))
                except trio_websocket.ConnectionClosed:
                    continue  # the supervisor is reconnecting: send again on the next one
                await pending.done.wait()
            finally:
                del self._pending[request_id]
            if pending.lost:
                continue
            reply = pending.reply
            if isinstance(reply, ErrorReply):
                raise RequestError(_error_code(reply.code), reply.error, reply.id)
            assert reply is not None
            return reply

    # --- supervisor ----------------------------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect; see the module docstring.

        Raises only before ``task_status.started()``, i.e. when the first connection
        fails (:class:`ConnectError`, :class:`ConnectionClosedError`). Afterwards the
        client's end is recorded and raised to the consumer and to requests instead.
        """
        attempt = 0
        code: int  # a CloseCode, or any other code the server sent
        error: ClientError
        try:
            while True:
                try:
                    ended = await self._connect_and_serve(task_status)
                except AuthenticationError as exc:  # get_token failed
                    if not self._started:
                        raise
                    if self._reauthenticating:
                        self._finish(exc)
                        return
                    error = exc
                    code, reason, uptime = CloseCode.ABNORMAL_CLOSURE, str(exc), 0.0
                except ConnectError as exc:
                    error = exc
                    code, reason, uptime = CloseCode.ABNORMAL_CLOSURE, str(exc), 0.0
                    if isinstance(exc, TLSError) or (
                        exc.status_code is not None and exc.status_code not in _RETRYABLE_STATUS
                    ):
                        # Sent again, the same certificate or request fails the same way.
                        if not self._started:
                            raise
                        self._finish(exc)
                        return
                else:
                    code, reason, uptime = ended.code, ended.reason, ended.uptime
                    if code in REAUTHENTICATE_CLOSE_CODES and not self._closing:
                        if self._get_token is not None and not self._reauthenticating:
                            self._reauthenticating = True
                            logger.info(
                                "[client %s] unauthorized (%s): reconnecting once with a new token",
                                self.client_id,
                                self._unauthorized or reason,
                            )
                            continue
                        refused = self._authentication_failed(reason)
                        if not self._started:
                            raise refused
                        self._finish(refused)
                        return
                    error = ConnectionClosedError(code, reason)
                    if not self._started and not should_reconnect(code):
                        raise error
                    if code == CloseCode.NORMAL or self._closing:
                        self._finish(None)
                        return
                    if not should_reconnect(code):
                        self._finish(error)
                        return
                if uptime >= self.backoff.reset_after:
                    attempt = 0
                attempt += 1
                if not self._started:
                    # The first connection retries as a reconnect would (the gateway
                    # may start after us), and ends with its own last error.
                    await self._first_retry(attempt, error)
                    continue
                if attempt > self.backoff.max_attempts:
                    failed = ReconnectFailed(attempt - 1)
                    failed.__cause__ = error
                    self._finish(failed)
                    return
                delay = self.backoff.delay(attempt, self._rng.random)
                logger.info(
                    "[client %s] disconnected (%s %s); retry %d in %.2fs",
                    self.client_id,
                    code,
                    reason,
                    attempt,
                    delay,
                )
                self._inbox.put(Disconnected(code, reason, attempt, delay))
                await trio.sleep(delay)
                if self._closing:
                    self._finish(None)
                    return
        finally:
            # Cancelled (the caller left open_client) or finished: wake everyone.
            self._done = True
            self._inbox.end(self._error)
            self._ready.set()
            self._ended.set()

    async def _first_retry(self, attempt: int, error: ClientError) -> None:
        """Wait the backoff's delay before retry ``attempt`` of the first connection,
        or raise ``error`` (saying how often it tried) once the attempts are spent."""
        if attempt > self.backoff.max_attempts:
            if attempt > 1:
                error.args = (f"{error.args[0]} (gave up after {attempt} attempts)",)
            raise error
        delay = self.backoff.delay(attempt, self._rng.random)
        logger.warning(
            "[client %s] cannot connect yet (%s); retry %d of %d in %.2fs",
            self.client_id,
            error,
            attempt,
            self.backoff.max_attempts,
            delay,
        )
        await trio.sleep(delay)

    def _authentication_failed(self, reason: str) -> AuthenticationError:
        why = self._unauthorized or f"closed with 4401 {reason}".rstrip()
        if self._get_token is not None:
            return AuthenticationError(
                f"the gateway refused the new token from get_token too ({why}): "
                "check the token provider"
            )
        if self._token is None:
            return AuthenticationError(
                f"the gateway requires a token ({why}): pass token= or get_token= to open_client"
            )
        return AuthenticationError(
            f"the gateway refused the token ({why}); pass get_token= to fetch new ones"
        )

    async def _fetch_token(self) -> str | None:
        """The token for the next connection: ``token`` the first time (every time
        without ``get_token``), else a new one from ``get_token``."""
        if self._token is not None and (self._get_token is None or not self._token_sent):
            self._token_sent = True
            return self._token
        if self._get_token is None:
            return None
        self._token = await self._provide()
        self._token_sent = True
        return self._token

    async def _provide(self) -> str:
        """A token from ``get_token``, within ``connect_timeout``; raises
        :class:`AuthenticationError` saying why there is none."""
        assert self._get_token is not None
        try:
            with trio.fail_after(self._connect_timeout):
                token = await self._get_token()
        except trio.TooSlowError:
            raise AuthenticationError(
                f"get_token returned no token within {self._connect_timeout:g}s"
            ) from None
        except Exception as exc:
            raise AuthenticationError(f"get_token failed: {exc!r}") from exc
        if not isinstance(token, str) or not _HEADER_SAFE.fullmatch(token):
            got = "an empty string" if token == "" else f"a {type(token).__name__}"
            if isinstance(token, str) and token:
                got = "a string with spaces or non-ASCII characters"
            raise AuthenticationError(
                f"get_token must return a JWT (printable ASCII without spaces), got {got}"
            )
        return token

    def _finish(self, error: ClientError | None) -> None:
        self._error = error
        self._done = True
        self._inbox.end(error)
        self._ready.set()
        self._ended.set()

    async def _connect_and_serve(self, task_status: trio.TaskStatus[None]) -> _Ended:
        """One connection, from TCP connect to close.

        Raises :class:`ConnectError` when it never got to ``welcome`` for a reason
        other than a close frame (which is returned as the connection's end), and
        :class:`AuthenticationError` when ``get_token`` gives no token.
        """
        self._unauthorized = None
        token = await self._fetch_token()
        try:
            with trio.fail_after(self._connect_timeout):
                if self._ssl_context is None:
                    stream: trio.abc.Stream = await trio.open_tcp_stream(self._host, self._port)
                else:
                    secure = await trio.open_ssl_over_tcp_stream(
                        self._host, self._port, ssl_context=self._ssl_context
                    )
                    stream = secure
                    # Now, not inside trio-websocket: there a failed handshake is only
                    # a connection that never sends a welcome.
                    try:
                        await secure.do_handshake()
                    except BaseException:  # closed, whatever it was, then re-raised
                        await trio.aclose_forcefully(secure)
                        raise
        except trio.BrokenResourceError as exc:
            tls = exc.__cause__
            if isinstance(tls, ssl.SSLError):
                raise TLSError(f"TLS handshake with {self.url} failed: {_tls_reason(tls)}") from tls
            raise ConnectError(f"cannot connect to {self.url}: {exc}") from exc
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc or 'timed out'}") from exc
        # trio-websocket never closes the stream itself when the server closes first,
        # nor after a refused handshake: this finally does, in every case.
        try:
            outcome = await self._serve_stream(stream, task_status, token)
        finally:
            await trio.aclose_forcefully(stream)
        if isinstance(outcome, ConnectError):
            raise outcome
        return outcome

    async def _serve_stream(
        self, stream: trio.abc.Stream, task_status: trio.TaskStatus[None], token: str | None
    ) -> _Ended | ConnectError:
        # The nursery holds trio-websocket's reader task for this connection only.
        outcome: _Ended | ConnectError | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    outcome = await self._handshake_and_serve(nursery, stream, task_status, token)
                finally:
                    nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionRejected as group:
            rejected = group.exceptions[0]
            assert isinstance(rejected, trio_websocket.ConnectionRejected)
            outcome = ConnectError(
                f"handshake refused by {self.url}: HTTP {rejected.status_code}",
                rejected.status_code,
            )
        except* wsproto.utilities.LocalProtocolError:
            # trio-websocket 0.12.2's reader answers a ping that crosses our close
            # with a pong wsproto refuses in that state, and dies. The connection
            # is over either way: an end like any other, not a crash of the client.
            if outcome is None:
                outcome = _Ended(CloseCode.ABNORMAL_CLOSURE, "Connection lost while closing", 0.0)
        assert outcome is not None
        return outcome

    async def _handshake_and_serve(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        task_status: trio.TaskStatus[None],
        token: str | None,
    ) -> _Ended | ConnectError:
        host_header = self._host if self._port in (80, 443) else f"{self._host}:{self._port}"
        # Never in the URL: it would end up in access logs (docs/security.md).
        headers = [(b"Authorization", b"Bearer " + token.encode())] if token else None
        first: Welcome | _Ended | None = None
        with trio.move_on_after(self._connect_timeout):
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]  # a SocketStream or an SSLStream over one
                host_header,
                self._resource,
                subprotocols=[self.codec.subprotocol],
                extra_headers=headers,
                max_message_size=MAX_SERVER_MESSAGE,
            )
            first = await self._receive_welcome(ws)
        if first is None:
            return ConnectError(f"no welcome from {self.url} within {self._connect_timeout}s")
        if isinstance(first, _Ended):
            return first
        return await self._serve(ws, first, task_status, token)

    async def _receive_welcome(self, ws: trio_websocket.WebSocketConnection) -> Welcome | _Ended:
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                code, reason = _close_of(exc)
                return _Ended(code, reason, 0.0)
            message = self._decode(data)
            if isinstance(message, Welcome):
                return message
            if isinstance(message, ErrorReply) and message.code == ErrorCode.UNAUTHORIZED:
                self._unauthorized = message.error  # the 4401 follows

    async def _serve(
        self,
        ws: trio_websocket.WebSocketConnection,
        welcome: Welcome,
        task_status: trio.TaskStatus[None],
        token: str | None,
    ) -> _Ended:
        opened = trio.current_time()
        connection = _Connection(ws, self.codec)
        previous = self.welcome
        self.welcome = welcome
        self._reauthenticating = False
        try:
            async with trio.open_nursery() as nursery:
                self._serve_scope = nursery.cancel_scope
                if self._closing:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._keepalive, ws, welcome.heartbeat_interval, nursery)
                if token is not None and self._get_token is not None:
                    nursery.start_soon(self._refresh, connection, token)
                if previous is not None:
                    self._reconnects += 1
                    await self._restore(connection)
                    self._inbox.put(Reconnected(welcome))
                self._connection = connection
                self._ready.set()
                self._ready = trio.Event()
                if not self._started:
                    self._started = True
                    task_status.started()
                try:
                    await self._read(connection)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._connection = None
            self._serve_scope = None
            for pending in self._pending.values():
                if not pending.done.is_set():
                    pending.lost = True
                    pending.done.set()
            self._restoring.clear()
            # Before our own close below: that records 1000 in trio-websocket too.
            closed = ws.closed
            # Needs trio-websocket's reader (still running) for the server's reply.
            with trio.move_on_after(self._close_timeout, shield=True):
                await ws.aclose()
        if closed is None:  # we ended it: the keepalive found the peer dead
            return _Ended(
                CloseCode.ABNORMAL_CLOSURE, "No pong: connection lost", trio.current_time() - opened
            )
        return _Ended(closed.code, closed.reason or "", trio.current_time() - opened)

    async def _keepalive(
        self, ws: trio_websocket.WebSocketConnection, interval: float, nursery: trio.Nursery
    ) -> None:
        """Ping every ``interval``; no pong within ``interval`` means a dead peer."""
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as waited:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            if waited.cancelled_caught:
                logger.warning("[client %s] no pong in %gs: reconnecting", self.client_id, interval)
                nursery.cancel_scope.cancel()
                return

    async def _refresh(self, connection: _Connection, token: str) -> None:
        """Send a new token from ``get_token`` ahead of each ``exp``; see the module
        docstring and ``_tokens``. Runs until the connection ends; a provider that
        fails, or returns no newer token, is asked again later, until ``exp``."""
        times: TokenTimes | None = token_times(token, self._wall_clock())
        while times is not None:
            await trio.sleep(max(0.0, times.refresh_at - self._wall_clock()))
            try:
                new = await self._provide()
            except AuthenticationError as exc:
                logger.warning("[client %s] token refresh: %s", self.client_id, exc)
                times = times.retry(self._wall_clock())
                continue
            new_times = token_times(new, self._wall_clock())
            if new == token or (new_times is not None and new_times.exp <= times.exp):
                times = times.retry(self._wall_clock())
                continue
            request_id = next(self._ids)
            connection.refreshes.append(request_id)
            try:
                await connection.send(Auth(token=new, id=request_id))
            except trio_websocket.ConnectionClosed:
                return  # the reader notices; the next connection asks for a token anyway
            self._token = token = new
            times = new_times

    async def _restore(self, connection: _Connection) -> None:
        """Send a ``subscribe`` for everything held (see the module docstring)."""
        for channel, symbols in list(self._held.items()):
            position = self._positions.get(channel)
            since, epoch = (position[1], position[0]) if position is not None else (None, None)
            await self._send_restore(connection, _Restore(channel, symbols, since, epoch))

    async def _send_restore(self, connection: _Connection, restore: _Restore) -> None:
        request_id = next(self._ids)
        self._restoring[request_id] = restore
        connection.in_flight.append(request_id)
        symbols = tuple(sorted(restore.symbols)) if restore.symbols is not None else None
        # A closed connection is the reader's to notice; the next one restores again.
        with suppress(trio_websocket.ConnectionClosed):
            await connection.send(
                Subscribe(
                    channel=restore.channel,
                    symbols=symbols,
                    since=restore.since,
                    epoch=restore.epoch,
                    id=request_id,
                )
            )

    # --- reader --------------------------------------------------------------------------

    async def _read(self, connection: _Connection) -> None:
        """Dispatch every message until the connection closes (then return)."""
        ws = connection.ws
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            message = self._decode(data)
            if message is not None:
                await self._dispatch(connection, message)

    def _decode(self, data: str | bytes) -> ServerMessage | None:
        try:
            message = decode_server(data, self.codec)
        except RemoteProtocolError as exc:
            # Unknown types are skipped as v1 asks; anything else undecodable is a
            # server bug that must not end the client: log it and go on.
            self._skipped += 1
            if exc.code is not ErrorCode.UNKNOWN_TYPE:
                logger.warning("[client %s] undecodable message skipped: %s", self.client_id, exc)
            return None
        self._received += 1
        return message

    async def _dispatch(self, connection: _Connection, message: ServerMessage) -> None:
        if isinstance(message, ErrorReply) and message.code == ErrorCode.UNAUTHORIZED:
            if message.id is not None and message.id in connection.refreshes:
                # The current token holds until its exp; then 4401, and a new one.
                logger.warning(
                    "[client %s] token refresh refused: %s", self.client_id, message.error
                )
                self._inbox.put(message)
                return
            if message.id is None:
                # The token expired: the 4401 follows. Not a reply to a pending request,
                # which is sent again on the next connection.
                self._unauthorized = message.error
                return
        if isinstance(message, Subscribed | Unsubscribed):
            self._record(message)
        if isinstance(message, Subscribed | Unsubscribed | Pong | ErrorReply):
            reply_id = connection.answered(message.id)
            restore = self._restoring.pop(reply_id, None) if reply_id is not None else None
            if restore is not None:
                if isinstance(message, ErrorReply):
                    await self._restore_failed(connection, restore, message)
                return
            pending = self._pending.get(reply_id) if reply_id is not None else None
            if pending is not None:
                pending.reply = message
                pending.done.set()
            elif isinstance(message, ErrorReply):
                self._inbox.put(message)
            return
        if isinstance(message, Welcome):
            return
        if not isinstance(message, PriceUpdate) and message.seq:  # seq 0: a node's own notice
            channel = _channel_of(message)
            epoch = self.welcome.epoch if self.welcome is not None else ""
            last = self._positions.get(channel)
            if last is not None and last[0] == epoch and message.seq <= last[1]:
                return  # replayed twice: already delivered
            self._positions[channel] = (epoch, message.seq)
        self._inbox.put(message)

    def _record(self, ack: Subscribed | Unsubscribed) -> None:
        channel = ack.channel
        if isinstance(ack, Subscribed):
            if channel is Channel.PRICES:
                self._held[channel] = frozenset(ack.symbols) if ack.symbols is not None else None
            else:
                self._held[channel] = None
                if ack.seq is not None and self.welcome is not None:
                    # Everything up to it was received before the ack, or, on a resume
                    # (where it is our since), is replayed right after it.
                    self._positions[channel] = (self.welcome.epoch, ack.seq)
        elif channel is Channel.PRICES and ack.symbols is not None:
            self._held[channel] = frozenset(ack.symbols)
        else:
            self._held.pop(channel, None)
            self._positions.pop(channel, None)

    async def _restore_failed(
        self, connection: _Connection, restore: _Restore, error: ErrorReply
    ) -> None:
        if (
            error.code == ErrorCode.HISTORY_UNAVAILABLE
            and restore.since is not None
            and restore.epoch is not None
        ):
            self._inbox.put(HistoryGap(restore.channel, restore.since, restore.epoch))
            # Another epoch numbers from scratch: forget the old position.
            self._positions.pop(restore.channel, None)
            plain = _Restore(restore.channel, restore.symbols, None, None)
            await self._send_restore(connection, plain)
            return
        # The subscription cannot be restored as it was (e.g. a symbol left the
        # universe): the consumer is told by the error itself.
        self._held.pop(restore.channel, None)
        logger.warning(
            "[client %s] cannot restore %s: %s", self.client_id, restore.channel, error.error
        )
        self._inbox.put(error)


def _tls_reason(error: ssl.SSLError) -> str:
    """What failed, and what to do: verification failures say which check failed."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the gateway's certificate is not trusted: {error.verify_message} (pass "
            "open_client an ssl_context that trusts it, e.g. ssl.create_default_context("
            "cafile=...) for a private CA)"
        )
    return error.reason or str(error)


def _close_of(exc: BaseException) -> tuple[int, str]:
    reason = getattr(exc, "reason", None)
    if reason is None:
        return CloseCode.ABNORMAL_CLOSURE, "Connection lost"
    return int(reason.code), reason.reason or ""


def _channel_name(channel: Channel | str) -> Channel:
    try:
        return Channel(channel)
    except ValueError:
        # Sent as is: the encoder writes the string; the server is the judge.
        return typing.cast(Channel, channel)


def _error_code(code: str) -> ErrorCode | str:
    try:
        return ErrorCode(code)
    except ValueError:
        return code


_EVENT_CHANNELS: Final[dict[type[EventMessage], Channel]] = {
    message_class: channel for channel, (message_class, _) in CHANNEL_EVENTS.items()
}


def _channel_of(message: EventMessage) -> Channel:
    return _EVENT_CHANNELS[type(message)]


@asynccontextmanager
async def open_client(
    url: str,
    client_id: str,
    *,
    codec: Codec = Codec.JSON,
    backoff: Backoff | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    rng: random.Random | None = None,
    token: str | None = None,
    get_token: TokenProvider | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[Client]:
    """Connect to the gateway at ``url`` (``ws://host:port``; ``/ws/{client_id}`` is
    added) as ``client_id`` and yield the :class:`Client` once ``welcome`` arrived.
    Trio only: under asyncio, :func:`realtime.client.open_asyncio_client` takes the
    same arguments (this raises ``RuntimeError`` saying so).

    The first connection is retried per ``backoff`` (default :class:`Backoff`) when it
    cannot be made (refused, timed out after ``connect_timeout``, HTTP 429/502/503/504)
    or is closed with a reconnectable code, and each retry is logged; once
    ``backoff.max_attempts`` retries failed (0: at once), the last error is raised:
    :class:`ConnectError`. What would fail again is raised at once: :class:`TLSError`
    (the certificate is not trusted, ...), :class:`ConnectError` for another HTTP
    status, :class:`ConnectionClosedError` when the server closes it with a fatal
    code (4400 for an invalid id). Later losses are retried per ``backoff`` too;
    ``rng`` supplies the jitter (tests pass a seeded one).
    ``buffer_size`` bounds the inbox (see :class:`Lagged`); ``codec`` picks JSON or
    MessagePack. Leaving the block closes the connection with 1000, bounded by
    ``close_timeout``, and cancels the client's tasks.

    With authentication on, give ``token`` (a JWT, sent as ``Authorization: Bearer``)
    and/or ``get_token`` (an async function returning one, called for every later
    connection and ahead of each token's ``exp``; bounded by ``connect_timeout``).
    ``wall_clock`` (Unix seconds) is what ``exp`` is compared with. A token the
    gateway refuses (4401) is answered by one reconnect with a token from
    ``get_token``; otherwise the client raises :class:`AuthenticationError`.
    """
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:  # not in trio.run: asyncio's AttributeError, said plainly
        raise RuntimeError(
            "open_client runs under Trio; under asyncio use "
            "realtime.client.open_asyncio_client, which takes the same arguments"
        ) from None
    client = Client(
        url,
        client_id,
        codec=codec,
        backoff=backoff or Backoff(),
        buffer_size=buffer_size,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        ssl_context=ssl_context,
        rng=rng or random.Random(),
        token=token,
        get_token=get_token,
        wall_clock=wall_clock,
    )
    async with _unwrapped(), trio.open_nursery() as nursery:
        await nursery.start(client._run)
        try:
            yield client
        finally:
            # Bounded cleanup, also when the caller was cancelled; the handshake
            # itself is bounded by close_timeout, this only guards against a bug.
            with trio.move_on_after(close_timeout + 1.0, shield=True):
                await client.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """Re-raise a lone exception out of the nursery's group.

    The client's task never raises once started, so a group holds the caller's own
    exception (or a Cancelled): users should see ``RequestError``, not a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:  # unwrapped and re-raised, never swallowed
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise
