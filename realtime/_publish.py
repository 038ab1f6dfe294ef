"""``POST /api/publish``: how the rest of the agent system pushes events into the gateway.

The body is ``{"channel": C, "data": {...}, "to": CLIENT_ID?}``. ``data`` is validated
as the channel's payload by :func:`protocol.structure_strict`, the same strict rules
a WebSocket frame gets, and the error body carries the same ``error`` / ``code``
fields as the WebSocket's ``error`` message. A valid event goes to the same
:class:`~feeds.Publisher` the feeds use (the bus), so it is numbered, kept in history
and fanned out exactly like a feed's.

Order of checks, and the answer to each failure (every error body is
``{"error": sentence, "code": code}``):

====  ====================  ===========================================================
405   ``invalid_message``   not a POST
403   ``forbidden``         the API is off: no key is configured (``--api-key``)
401   ``unauthorized``      ``Authorization: Bearer <key>`` missing or wrong
413   ``too_large``         body over the limit (``--publish-max-body``)
400   protocol codes        ``invalid_json``, ``invalid_message``, ``unknown_channel``,
                            ``invalid_symbol``: the body or ``data`` is not valid
403   ``forbidden``         ``channel`` is ``prices``: only the price feed publishes prices
503   ``unavailable``       the bus stayed full for ``--publish-timeout`` seconds
202                         accepted: queued on the bus, ``{"status": "accepted", ...}``
====  ====================  ===========================================================

Keys are compared in constant time and never logged. Nothing is published unless
the answer is 202.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
import trio

from feeds import Publisher
from protocol import (
    CHANNEL_EVENTS,
    CLIENT_ID_PATTERN,
    Channel,
    ErrorCode,
    RemoteProtocolError,
    structure_strict,
)

logger = logging.getLogger("realtime.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PATH: Final = "/api/publish"
#: Codes of the HTTP API's own failures; body failures use :class:`protocol.ErrorCode`.
UNAUTHORIZED: Final = "unauthorized"
TOO_LARGE: Final = "too_large"
UNAVAILABLE: Final = "unavailable"

_FIELDS: Final = ("channel", "data", "to")
_CLIENT_ID_RE: Final = re.compile(CLIENT_ID_PATTERN)


class _Reject(Exception):
    """An answer other than 202; raised inside the handler, turned into a response once."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class PublishAPI:
    """The ASGI handler of ``POST /api/publish`` (see the module doc).

    ``api_key`` ``None`` turns the endpoint off. ``max_body`` bounds the body in
    bytes; ``timeout`` bounds, in seconds, the wait for room on a full bus.
    """

    def __init__(
        self, publisher: Publisher, *, api_key: str | None, max_body: int, timeout: float
    ) -> None:
        self._publisher = publisher
        self._key = api_key.encode("utf-8") if api_key else None
        self._max_body = max_body
        self._timeout = timeout
        #: Events accepted, and requests refused, since start.
        self.accepted = 0
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body = await self._handle(scope, receive)
        except _Reject as reject:
            self.rejected += 1
            status = reject.status
            body = {"error": reject.message, "code": reject.code}
            if status == 405:
                extra.append((b"allow", b"POST"))
            elif status == 401:
                extra.append((b"www-authenticate", b'Bearer realm="realtime"'))
            elif status == 503:
                extra.append((b"retry-after", b"1"))
            if status in (401, 403, 413, 503):
                logger.warning("[API] Refused publish from %s: %s", _peer(scope), reject.message)
        payload = orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope["method"] != "POST":
            raise _Reject(405, ErrorCode.INVALID_MESSAGE, "Use POST to publish")
        if self._key is None:
            raise _Reject(
                403,
                ErrorCode.FORBIDDEN,
                "The publish API is off: start the gateway with --api-key "
                "(or REALTIME_API_KEY) to turn it on",
            )
        self._authenticate(scope)
        raw = await self._read_body(scope, receive)
        channel, data, to = _parse(raw)
        with trio.move_on_after(self._timeout) as waited:
            await self._publisher.publish(channel, data, to=to)
        if waited.cancelled_caught:
            raise _Reject(
                503,
                UNAVAILABLE,
                f"The gateway's bus stayed full for {self._timeout:g}s; nothing was "
                "published: retry later",
            )
        self.accepted += 1
        logger.info(
            "[API] Published %s from %s to %s",
            channel,
            _peer(scope),
            "every subscriber" if to is None else to,
        )
        body: dict[str, Any] = {"status": "accepted", "channel": str(channel)}
        if to is not None:
            body["to"] = to
        return 202, body

    def _authenticate(self, scope: Scope) -> None:
        values = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        scheme, _, token = (values[0] if len(values) == 1 else b"").partition(b" ")
        assert self._key is not None
        # compare_digest runs in time independent of where the strings differ.
        if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)):
            raise _Reject(
                401,
                UNAUTHORIZED,
                "Send the gateway's API key as 'Authorization: Bearer <key>'"
                if not values
                else "Wrong API key, or not sent as 'Authorization: Bearer <key>'",
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self._max_body
        too_large = _Reject(413, TOO_LARGE, f"The body is larger than {limit} bytes")
        for name, value in scope["headers"]:
            if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                raise _Reject(400, ErrorCode.INVALID_MESSAGE, "The request body was cut off")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _parse(raw: bytes) -> tuple[Channel, Any, str | None]:
    """The channel, validated payload and target of a publish body; raises _Reject."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Reject(400, ErrorCode.INVALID_JSON, f"The body is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise _Reject(400, ErrorCode.INVALID_MESSAGE, "The body must be a JSON object")
    for key in body:
        if key not in _FIELDS:
            raise _Reject(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"Unknown field {key!r}: a publish body has channel, data and optionally to",
            )
    for key in ("channel", "data"):
        if key not in body:
            raise _Reject(400, ErrorCode.INVALID_MESSAGE, f"Field {key!r} is required")
    name = body["channel"]
    if not isinstance(name, str):
        raise _Reject(400, ErrorCode.INVALID_MESSAGE, "Field 'channel' must be a string")
    try:
        channel = Channel(name)
    except ValueError:
        raise _Reject(400, ErrorCode.UNKNOWN_CHANNEL, f"Unknown channel: {name}") from None
    if channel is Channel.PRICES:
        raise _Reject(
            403,
            ErrorCode.FORBIDDEN,
            "Prices cannot be published through the API: they come from the gateway's "
            "price feed. Publish alerts, signals, portfolio or notifications",
        )
    to = body.get("to")
    if "to" in body and not (isinstance(to, str) and _CLIENT_ID_RE.fullmatch(to)):
        raise _Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            "Field 'to' must be a client id: 1-64 of A-Z a-z 0-9 _ . : -",
        )
    if type(body["data"]) is not dict:
        raise _Reject(400, ErrorCode.INVALID_MESSAGE, "Field 'data' must be an object")
    try:
        data = structure_strict(body["data"], CHANNEL_EVENTS[channel][1])
    except RemoteProtocolError as exc:
        raise _Reject(400, exc.code, f"In 'data': {exc.message}") from None
    return channel, data, to


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
