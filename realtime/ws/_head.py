"""HTTP/1.x request heads, as the listener reads them before it routes a connection.

One parser serves both sides of the port: a WebSocket upgrade keeps its
`RequestHead` for the connection's life (the session reads ``Origin``, the
client id, the subprotocols from it), and an HTTP request is refused here with
`BadRequest` before it ever reaches hypercorn when its head is malformed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

import attrs

__all__ = ["TOKEN_CHARS", "BadRequest", "RequestHead", "parse_request_head"]

#: The characters of an RFC 9110 token (method, header name).
TOKEN_CHARS: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_HTTP_VERSIONS: Final = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}


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


@attrs.frozen
class RequestHead:
    """A parsed HTTP/1.x request head, as read by the listener.

    ``raw_headers`` is the validated header block as received (``name: value``
    lines joined by CRLF); `headers` and `header` parse it on each call, so an
    idle WebSocket keeps one small bytes object rather than a tuple per
    header line. ``trailing`` holds the bytes that arrived after the head
    (early WebSocket frames, or a pipelined body); `accept_websocket` consumes
    them. ``client`` is the peer's ``(host, port)`` when known. ``source`` is the
    address the listener's per-IP limits count the request under (the peer's, or
    the client a trusted proxy forwarded for; an IPv6 /64 block), ``None`` when they
    do not count it.
    """

    method: str
    target: str
    http_version: str
    raw_headers: bytes = b""
    trailing: bytes = b""
    client: tuple[str, int] | None = None
    source: str | None = None

    @property
    def path(self) -> str:
        """The raw (still percent-encoded) path of ``target``, e.g. ``/ws/client-1``."""
        path = self.target.partition("?")[0]
        if not path.startswith("/") and "://" in path:
            # Absolute form (RFC 9112 section 3.2.2): keep only the path.
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        return path

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
    if not method or not TOKEN_CHARS.issuperset(method):
        raise BadRequest(400, "Malformed request method")
    if not target or any(byte <= 0x20 or byte >= 0x7F for byte in target):
        raise BadRequest(400, "Malformed request target")
    http_version = _HTTP_VERSIONS.get(version)
    if http_version is None:
        raise BadRequest(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
    if raw_headers:
        for line in raw_headers.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not name or not TOKEN_CHARS.issuperset(name):
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
