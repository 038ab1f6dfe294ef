"""``POST /api/publish``: how the rest of the agent system pushes events into the gateway.

The body is ``{"channel": C, "data": {...}, "to": CLIENT_ID?, "user": SUB?}``. ``to``
sends the event to one client id, ``user`` to every connection of that user (a token's
``sub``) and nobody else's; given both, to that client id if it is that user's. With
authentication on, ``to`` needs ``user``: a client id is one user's only while its
connection lasts, and history keeps what the event was addressed to. ``data`` is validated
as the channel's payload by :func:`protocol.structure_strict`, the same strict rules
a WebSocket frame gets, and the error body carries the same ``error`` / ``code``
fields as the WebSocket's ``error`` message. A valid event goes to the same
:class:`~feeds.Publisher` the feeds use (the bus), so it is numbered, kept in history
and fanned out exactly like a feed's.

Order of checks, and the answer to each failure (every error body is
``{"error": sentence, "code": code}``):

====  ====================  ===========================================================
405   ``invalid_message``   not a POST
403   ``forbidden``         the API is off: no API key, and authentication off
401   ``unauthorized``      ``Authorization: Bearer <key or token>`` missing or refused
403   ``forbidden``         a token without the admin role
413   ``too_large``         body over the limit (``--publish-max-body``)
400   protocol codes        ``invalid_json``, ``invalid_message``, ``unknown_channel``,
                            ``invalid_symbol``: the body or ``data`` is not valid, or
                            ``to`` without ``user`` while authentication is on
403   ``forbidden``         ``channel`` is ``prices``: only the price feed publishes prices
503   ``unavailable``       the bus cannot take it now (a cluster node that lost Redis);
                            ``Retry-After`` says when to try again (docs/cluster.md)
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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson
import trio

from feeds import MAX_USER_LENGTH, Publisher
from protocol import (
    CHANNEL_EVENTS,
    CLIENT_ID_PATTERN,
    Channel,
    ErrorCode,
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
#: Seconds a 503 asks the caller to wait before publishing again.
RETRY_AFTER: Final = 2
__all__ = [
    "PATH",
    "TOO_LARGE",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "APIEndpoint",
    "PublishAPI",
    "Reject",
]

_FIELDS: Final = ("channel", "data", "to", "user")
_CLIENT_ID_RE: Final = re.compile(CLIENT_ID_PATTERN)
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
            body = {"error": reject.message, "code": reject.code}
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
    ) -> None:
        super().__init__(auth=auth, max_body=max_body, body_timeout=body_timeout)
        self._publisher = publisher
        #: Events accepted since start.
        self.accepted = 0

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        self._check_method(scope, ("POST",), "Use POST to publish")
        self._authenticate(scope)
        raw = await self._read_body(scope, receive)
        channel, data, to, user = _parse(raw, authentication=self._auth.authentication)
        try:
            await self._publisher.publish(channel, data, to=to, user=user)
        except PublishUnavailable as exc:
            logger.warning("[API] Could not publish %s from %s: %s", channel, peer(scope), exc)
            raise Reject(
                503,
                UNAVAILABLE,
                str(exc),
                headers=[(b"retry-after", b"%d" % RETRY_AFTER)],
            ) from None
        self.accepted += 1
        logger.info(
            "[API] Published %s from %s to %s",
            channel,
            peer(scope),
            _addressee(to, user),
        )
        body: dict[str, Any] = {"status": "accepted", "channel": str(channel)}
        if to is not None:
            body["to"] = to
        if user is not None:
            body["user"] = user
        return 202, body, ()


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


def _parse(raw: bytes, *, authentication: bool) -> tuple[Channel, Any, str | None, str | None]:
    """The channel, validated payload, target client id and target user of a publish
    body; raises Reject."""
    body = json_object(raw)
    for key in body:
        if key not in _FIELDS:
            raise Reject(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"Unknown field {key!r}: a publish body has channel, data and optionally "
                "to and user",
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
    if channel is Channel.PRICES:
        raise Reject(
            403,
            ErrorCode.FORBIDDEN,
            "Prices cannot be published through the API: they come from the gateway's "
            "price feed. Publish alerts, signals, portfolio or notifications",
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
    except RemoteProtocolError as exc:
        raise Reject(400, exc.code, f"In 'data': {exc.message}") from None
    return channel, data, to, user
