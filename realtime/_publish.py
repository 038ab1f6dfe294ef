"""``POST /api/publish``: how the rest of the agent system pushes events into the gateway.

The body is one event, ``{"channel": C, "data": {...}, "to": CLIENT_ID?, "user":
SUB?}`` (a price: ``{"channel": "prices", "symbol": S, "data": {...}}``), or a batch of
them, ``{"events": [event, ...]}``, published in order. ``to`` sends the event to one
client id, ``user`` to every connection of that user (a token's ``sub``) and nobody
else's; given both, to that client id if it is that user's. With authentication on,
``to`` needs ``user``: a client id is one user's only while its connection lasts, and
history keeps what the event was addressed to. ``data`` is validated as the channel's
payload by :func:`protocol.structure_strict`, the same strict rules a WebSocket frame
gets (a price also needs ``price``, ``bid`` and ``ask`` above 0 and ``bid <= ask``),
and the error body carries the same ``error`` / ``code`` fields as the WebSocket's
``error`` message; in a batch the sentence starts with the event's place
(``events[3]: ...``). Every event of a request is checked before any is published. A
valid event goes to the same :class:`~feeds.Publisher` the feeds use (the price tap,
in front of the bus), so it is numbered, kept in history and fanned out exactly like
a feed's, and a price reaches the alert, signal and portfolio feeds.

A price is the market's state, the same for everyone: it takes no ``to`` or ``user``;
its symbol must be in the universe (``welcome.symbols``: else no client could
subscribe to it), and not one the gateway's own price feed publishes (the simulated
market's, a replay's): two writers of one symbol would interleave their prices.

Order of checks, and the answer to each failure (every error body is
``{"error": sentence, "code": code}``):

====  ====================  ===========================================================
405   ``invalid_message``   not a POST
403   ``forbidden``         the API is off: no API key, and authentication off
401   ``unauthorized``      ``Authorization: Bearer <key or token>`` missing or refused
403   ``forbidden``         a token without the admin role
413   ``too_large``         body over the limit (``--publish-max-body``)
400   protocol codes        ``invalid_json``, ``invalid_message``, ``unknown_channel``,
                            ``invalid_symbol``, ``unknown_symbol``: the body, an event
                            or its ``data`` is not valid, or ``to`` without ``user``
                            while authentication is on
409   ``forbidden``         a price of a symbol the gateway's own price feed publishes
503   ``unavailable``       the bus cannot take it now (a cluster node that lost Redis),
                            nothing was published; ``Retry-After`` says when to try
                            again (docs/cluster.md)
503   ``unconfirmed``       the bus failed while taking it: it (or, in a batch, the
                            events before it) may have been published; no
                            ``Retry-After``, since a retry could publish it twice
202                         accepted: in every subscriber's outbox, ``{"status": "accepted", ...}``
====  ====================  ===========================================================

Credentials are checked by :class:`~realtime._http_auth.HTTPAuth` (the API key in
constant time, or a token) and never logged. Nothing is published unless the answer
is 202.

:class:`APIEndpoint`, the credential, body and error handling of this handler, is
shared with the other endpoints of the HTTP API (``_rules_api``, ``_disconnect``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Final

import attrs
import orjson
import trio

from feeds import MAX_USER_LENGTH, Publisher
from protocol import (
    CHANNEL_EVENTS,
    CLIENT_ID_PATTERN,
    SYMBOL_PATTERN,
    Channel,
    ErrorCode,
    EventData,
    PriceData,
    RemoteProtocolError,
    structure_strict,
)

from ._bus import PublishUnavailable
from ._http_auth import UNAUTHORIZED, Caller, HTTPAuth, Reject, peer

logger = logging.getLogger("realtime.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

PATH: Final = "/api/publish"
#: Codes of the HTTP API's own failures; body failures use :class:`protocol.ErrorCode`.
TOO_LARGE: Final = "too_large"
UNAVAILABLE: Final = "unavailable"
#: The bus failed while taking the events: they may have been published.
UNCONFIRMED: Final = "unconfirmed"
#: Seconds a 503 asks the caller to wait before publishing again.
RETRY_AFTER: Final = 2
__all__ = [
    "PATH",
    "TOO_LARGE",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "UNCONFIRMED",
    "APIEndpoint",
    "PublishAPI",
    "Reject",
]

_FIELDS: Final = ("channel", "data", "to", "user", "symbol")
#: Most events one request may carry (the body's size bounds it too).
MAX_BATCH: Final = 1000
_CLIENT_ID_RE: Final = re.compile(CLIENT_ID_PATTERN)
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)
#: Refusals worth a warning in the log: someone without the key, or misconfigured,
#: or sending too much; not the everyday 4xx of a bad body.
#: Seconds a request body may take to arrive, whole (408 past it).
BODY_TIMEOUT: Final = 10.0
_LOGGED_REFUSALS: Final = frozenset({401, 403, 413})


class APIEndpoint:
    """The common half of the gateway's HTTP API handlers (ASGI): the credential, the
    bounded body, JSON answers and the logging of refusals.

    A subclass implements :meth:`_handle` and calls, in this order,
    :meth:`_check_method` (405), :meth:`_authenticate` or :meth:`_caller` (403 when
    the API is off; 401 for a missing or refused credential; :meth:`_authenticate`
    also 403 for a caller who is not an administrator) and, if it takes a body,
    :meth:`_read_body` (413 beyond ``max_body`` bytes): so the credential is checked
    before the body is read, and nothing else is learned without it. Credentials are
    never logged (see ``_http_auth``).
    """

    #: How a refusal is logged: ``[API] Refused {_action} from HOST: reason``.
    _action = "request"
    #: What the 403 of an API that is off calls it.
    _api_name = "The HTTP API"

    def __init__(
        self, *, auth: HTTPAuth, max_body: int, body_timeout: float = BODY_TIMEOUT
    ) -> None:
        self._auth = auth
        self._max_body = max_body
        self._body_timeout = body_timeout
        #: Requests refused since start.
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, headers = await self._handle(scope, receive)
        except Reject as reject:
            self.rejected += 1
            status, headers = reject.status, reject.headers
            body = {"error": reject.message, "code": reject.code, **reject.details}
            if status in _LOGGED_REFUSALS:
                self._auth.log_refusal(self._action, scope, reject.message)
        # No body (204): no Content-Length either, which a 204 must not carry.
        payload = b"" if body is None else orjson.dumps(body)
        start: list[tuple[bytes, bytes]] = []
        if body is not None:
            start += [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
            ]
        start += headers
        await send({"type": "http.response.start", "status": status, "headers": start})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        """The status, the JSON body (``None``: no body) and extra headers of a
        successful answer; raises :exc:`Reject` for any other."""
        raise NotImplementedError

    def _check_method(self, scope: Scope, allowed: Sequence[str], hint: str) -> None:
        """405 (with ``Allow``) unless the request's method is one of ``allowed``."""
        if scope["method"] not in allowed:
            raise Reject(
                405,
                ErrorCode.INVALID_MESSAGE,
                hint,
                headers=[(b"allow", ", ".join(allowed).encode())],
            )

    def _authenticate(self, scope: Scope) -> Caller:
        """The caller, an administrator: 403 if the API is off, 401 without a valid
        credential, 403 for a user who is not an administrator."""
        return self._auth.admin(scope, api_name=self._api_name)

    def _caller(self, scope: Scope) -> Caller:
        """The caller, whoever it is: 403 if the API is off, 401 without a valid
        credential."""
        return self._auth.caller(scope, api_name=self._api_name)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body; 413 as soon as it is known to exceed ``max_body`` (from
        ``Content-Length``, or while reading), 400 if the client goes away mid-body,
        408 unless all of it arrived within ``body_timeout`` (a body trickled in a
        byte at a time would hold the request open for as long as the client likes)."""
        limit = self._max_body
        too_large = Reject(413, TOO_LARGE, f"The body is larger than {limit} bytes")
        for name, value in scope["headers"]:
            if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self._body_timeout):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    raise Reject(400, ErrorCode.INVALID_MESSAGE, "The request body was cut off")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise Reject(
            408,
            ErrorCode.INVALID_MESSAGE,
            f"The request body did not arrive within {self._body_timeout:g} s",
            headers=[(b"connection", b"close")],
        )


class PublishAPI(APIEndpoint):
    """The ASGI handler of ``POST /api/publish`` (see the module doc).

    ``auth`` checks the credential: an administrator's, the API key or a token with
    the admin role. ``max_body`` bounds the body in bytes.
    """

    _action = "publish"
    _api_name = "The publish API"

    def __init__(
        self,
        publisher: Publisher,
        *,
        auth: HTTPAuth,
        max_body: int,
        body_timeout: float = BODY_TIMEOUT,
        universe: Collection[str] = (),
        feed_symbols: Collection[str] = (),
    ) -> None:
        super().__init__(auth=auth, max_body=max_body, body_timeout=body_timeout)
        self._publisher = publisher
        #: The price universe, read at each request (it may grow).
        self._universe = universe
        #: Symbols the gateway's own price feed publishes: refused here (409).
        self._feed_symbols = feed_symbols
        #: Events accepted since start.
        self.accepted = 0

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        self._check_method(scope, ("POST",), "Use POST to publish")
        self._authenticate(scope)
        raw = await self._read_body(scope, receive)
        body = json_object(raw)
        if "events" in body:
            events = [self._event(event, f"events[{n}]: ") for n, event in enumerate(_batch(body))]
        else:
            events = [self._event(body, "")]
        for published, event in enumerate(events):
            try:
                await self._publisher.publish(
                    event.channel, event.data, symbol=event.symbol, to=event.to, user=event.user
                )
            except PublishUnavailable as exc:
                self.accepted += published
                raise _unavailable(exc, published, len(events), scope) from None
        self.accepted += len(events)
        _log_published(events, scope)
        if "events" in body:
            return 202, {"status": "accepted", "events": len(events)}, ()
        (event,) = events
        answer: dict[str, Any] = {"status": "accepted", "channel": str(event.channel)}
        if event.to is not None:
            answer["to"] = event.to
        if event.user is not None:
            answer["user"] = event.user
        return 202, answer, ()

    def _event(self, body: object, where: str) -> _Event:
        """One event of a request, validated; raises Reject naming ``where``."""
        try:
            event = _parse(body, authentication=self._auth.authentication)
            if event.channel is Channel.PRICES:
                self._check_price_symbol(event.symbol)
        except Reject as reject:
            raise Reject(reject.status, reject.code, where + reject.message) from None
        return event

    def _check_price_symbol(self, symbol: str | None) -> None:
        assert symbol is not None
        if symbol not in self._universe:
            raise Reject(
                400,
                ErrorCode.UNKNOWN_SYMBOL,
                f"Unknown symbol: {symbol} is not in the price universe, so no client could "
                "subscribe to it. Start the gateway with it in --universe (or add it from a "
                "feed hook)",
            )
        if symbol in self._feed_symbols:
            raise Reject(
                409,
                ErrorCode.FORBIDDEN,
                f"{symbol}'s prices come from the gateway's own price feed (--feed); two "
                "writers would interleave. Publish prices of other symbols, or start the "
                "gateway with --feeds false, or a feed hook, to publish all of them",
            )


@attrs.frozen
class _Event:
    """One event of a publish request, validated."""

    channel: Channel
    data: EventData
    symbol: str | None
    to: str | None
    user: str | None


def _batch(body: dict[str, Any]) -> list[object]:
    """The events of a batch body ``{"events": [...]}``; raises Reject."""
    if len(body) > 1:
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            "A batch body has the one field 'events'; each event has channel, data, ...",
        )
    events = body["events"]
    if type(events) is not list or not 1 <= len(events) <= MAX_BATCH:
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            f"Field 'events' must be a list of 1 to {MAX_BATCH} events",
        )
    return events


def _unavailable(exc: PublishUnavailable, published: int, total: int, scope: Scope) -> Reject:
    """The 503 for a bus that failed after ``published`` of ``total`` events: retry
    later if nothing was published or sent, else say that some may have been."""
    logger.warning("[API] Could not publish from %s: %s", peer(scope), exc)
    if published == 0 and not exc.sent:
        return Reject(503, UNAVAILABLE, str(exc), headers=[(b"retry-after", b"%d" % RETRY_AFTER)])
    before = f"; {published} of the {total} events before it were published" if published else ""
    return Reject(503, UNCONFIRMED, f"{exc}{before}: publishing again could repeat them")


def _log_published(events: list[_Event], scope: Scope) -> None:
    # Prices at debug: an outside feed publishes them every second or faster.
    prices = sum(event.channel is Channel.PRICES for event in events)
    if prices and logger.isEnabledFor(logging.DEBUG):
        logger.debug("[API] Published %d prices from %s", prices, peer(scope))
    for event in events:
        if event.channel is not Channel.PRICES:
            logger.info(
                "[API] Published %s from %s to %s",
                event.channel,
                peer(scope),
                _addressee(event.to, event.user),
            )


def _addressee(to: str | None, user: str | None) -> str:
    if user is None:
        return "every subscriber" if to is None else to
    shown = repr(user[:64])
    return f"user {shown}" if to is None else f"{to} of user {shown}"


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds; 400 ``invalid_json`` or ``invalid_message`` if none."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Reject(400, ErrorCode.INVALID_JSON, f"The body is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise Reject(400, ErrorCode.INVALID_MESSAGE, "The body must be a JSON object")
    return body


def _parse(body: object, *, authentication: bool) -> _Event:
    """The channel, validated payload, symbol, target client id and target user of one
    event; raises Reject."""
    if type(body) is not dict:
        raise Reject(400, ErrorCode.INVALID_MESSAGE, "An event must be a JSON object")
    for key in body:
        if key not in _FIELDS:
            raise Reject(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"Unknown field {key!r}: an event has channel, data, and optionally to and "
                'user (symbol on prices); a batch is {"events": [...]}',
            )
    for key in ("channel", "data"):
        if key not in body:
            raise Reject(400, ErrorCode.INVALID_MESSAGE, f"Field {key!r} is required")
    name = body["channel"]
    if not isinstance(name, str):
        raise Reject(400, ErrorCode.INVALID_MESSAGE, "Field 'channel' must be a string")
    try:
        channel = Channel(name)
    except ValueError:
        raise Reject(400, ErrorCode.UNKNOWN_CHANNEL, f"Unknown channel: {name}") from None
    symbol = body.get("symbol")
    if channel is Channel.PRICES:
        for key in ("to", "user"):
            if key in body:
                raise Reject(
                    400,
                    ErrorCode.INVALID_MESSAGE,
                    f"Field {key!r} is not for prices: a price is the market's state, the "
                    "same for every client",
                )
        if "symbol" not in body:
            raise Reject(400, ErrorCode.INVALID_MESSAGE, "Field 'symbol' is required on prices")
        if not isinstance(symbol, str):
            raise Reject(400, ErrorCode.INVALID_MESSAGE, "Field 'symbol' must be a string")
        if not _SYMBOL_RE.fullmatch(symbol):
            raise Reject(
                400,
                ErrorCode.INVALID_SYMBOL,
                f"Invalid symbol: {symbol[:20]!r}; a symbol is 1-10 of A-Z 0-9 . -, "
                "starting with a letter",
            )
    elif "symbol" in body:
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            "Field 'symbol' is only for prices: the others carry their symbol in 'data'",
        )
    to = body.get("to")
    if "to" in body and not (isinstance(to, str) and _CLIENT_ID_RE.fullmatch(to)):
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            "Field 'to' must be a client id: 1-64 of A-Z a-z 0-9 _ . : -",
        )
    user = body.get("user")
    if "user" in body and not (isinstance(user, str) and 1 <= len(user) <= MAX_USER_LENGTH):
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            f"Field 'user' must be a user (a token's sub): a string of 1-{MAX_USER_LENGTH} "
            "characters",
        )
    if authentication and to is not None and user is None:
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            "With authentication on, 'to' needs 'user' too: a client id names a connection "
            "only within its user",
        )
    if type(body["data"]) is not dict:
        raise Reject(400, ErrorCode.INVALID_MESSAGE, "Field 'data' must be an object")
    try:
        data = structure_strict(body["data"], CHANNEL_EVENTS[channel][1])
        if isinstance(data, PriceData):
            check_price(data)
    except RemoteProtocolError as exc:
        raise Reject(400, exc.code, f"In 'data': {exc.message}") from None
    return _Event(channel, data, symbol if channel is Channel.PRICES else None, to, user)


def check_price(data: PriceData) -> None:
    """What the price of a market is, beyond the protocol's types (which
    ``structure_strict`` checked: finite numbers, a whole ``volume`` >= 0): ``price``,
    ``bid`` and ``ask`` above 0, and ``bid <= ask``. Raises
    :class:`RemoteProtocolError` ``invalid_message`` naming the field."""
    for name in ("price", "bid", "ask"):
        value = getattr(data, name)
        if not value > 0:
            raise RemoteProtocolError(
                ErrorCode.INVALID_MESSAGE, f"Field '{name}' must be above 0, got {value!r}"
            )
    if data.bid > data.ask:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Field 'bid' ({data.bid!r}) must not be above 'ask' ({data.ask!r})",
        )
