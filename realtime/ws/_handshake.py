"""The WebSocket opening handshake (RFC 6455 section 4.2), server side.

The listener has read and parsed the request head (`RequestHead`);
`check_websocket_upgrade` decides whether it is a valid upgrade before the
connection is counted, and `accept_websocket` writes the ``101`` itself and
hands the bytes that followed the head to the new `WebSocketConnection`, so no
wsproto or h11 handshake object stays alive per connection. The accept token
is wsproto's. `reject_websocket` answers any refused request with a plain HTTP
error and closes the stream.

The upgrade checks are our own: wsproto keeps its checks inside
``H11Handshake``, which would parse every head a second time with h11, and
they are looser than RFC 6455 asks (any ``Sec-WebSocket-Key``, any HTTP
version h11 accepts); a bad key or HTTP/1.0 is refused here with 400.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from http import HTTPStatus

import trio
from wsproto.utilities import generate_accept_token

from protocol import CloseCode

from ._connection import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_INBOUND_LIMITS,
    ConnectionClosed,
    InboundLimits,
    WebSocketConnection,
)
from ._head import TOKEN_CHARS, BadRequest, RequestHead

__all__ = ["accept_websocket", "check_websocket_upgrade", "reject_websocket"]


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
    hosts = [value for name, value in request.headers if name == b"host"]
    if len(hosts) != 1 or not hosts[0]:
        # RFC 9112 section 3.2: exactly one Host, as the HTTP side (h11) demands too.
        raise BadRequest(400, "A request needs exactly one non-empty 'Host' header")
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
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ValueError(f"invalid header name {name!r}")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise ValueError(f"invalid value for header {name!r}")


def _render_headers(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    _check_headers(headers)
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


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
    limits: InboundLimits = DEFAULT_INBOUND_LIMITS,
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

    ``limits`` bounds what the peer's frames may cost (see `InboundLimits`);
    ``close_timeout`` bounds the closing handshake and control-frame writes (see
    `aclose`).

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
        raise ConnectionClosed(
            CloseCode.PROTOCOL_ERROR, f"handshake rejected: {error.message}"
        ) from None
    subprotocol = _select_subprotocol(request.subprotocols, subprotocols)
    parts = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n",
    ]
    if subprotocol is not None:
        parts.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n")
    parts.append(_render_headers(extra_headers))
    parts.append(b"\r\n")
    connection = WebSocketConnection(
        stream,
        request,
        subprotocol=subprotocol,
        limits=limits,
        close_timeout=close_timeout,
    )
    await connection._send_handshake(b"".join(parts))
    return connection
