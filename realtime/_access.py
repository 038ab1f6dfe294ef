"""The access log: one line per HTTP request, with the client's address.

An ASGI middleware around the whole HTTP side (CORS preflights included), logging on
``realtime.access`` at INFO once the response has been sent::

    INFO realtime.access: 203.0.113.7 via 10.0.0.2:41234 "GET /readyz HTTP/1.1" 200 61 B 0.4 ms

with the fields ``peer``, ``client_ip``, ``method``, ``path``, ``http_version``,
``status`` (``None`` when no response was started: the client left, or the app
failed and hypercorn answered 500), ``bytes`` and ``duration_ms`` in JSON. The path
is logged as received (percent-encoded, so it cannot break the line), without its
query string, which could hold a credential, and cut at ``MAX_PATH`` characters;
headers are never logged. WebSocket upgrades never get here
(the listener serves them; their sessions log ``Connected``/``Disconnected``).

Cost: with the logger off for INFO (``--access-log false``, or ``--log-level
warning``) a request pays one cached level check. Otherwise a wrapper per ``send``
and one log record per request, whatever its size.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ._logs import describe_peer, peer_fields
from .ws import SourceTable

logger = logging.getLogger("realtime.access")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Longest path logged: a request line may be 8 KiB long, a log line need not.
MAX_PATH: Final = 200


class AccessLog:
    """Wraps ``app``; names clients as the per-IP limits do (``sources``)."""

    def __init__(self, app: ASGIApp, sources: SourceTable) -> None:
        self.app = app
        self.sources = sources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = trio.current_time()
        status: int | None = None
        sent = 0

        async def logged_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            self._log(scope, status, sent, trio.current_time() - started)

    def _log(self, scope: Scope, status: int | None, sent: int, seconds: float) -> None:
        forwarded = None
        if self.sources.limits.forwarded_allow_ips:  # else the header changes nothing
            values = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
            forwarded = b", ".join(values).decode("latin-1") if values else None
        client = scope.get("client")
        peer = peer_fields(self.sources, (client[0], client[1]) if client else None, forwarded)
        # As received, still percent-encoded: a decoded %0A would break the line.
        raw_path = scope.get("raw_path") or scope["path"].encode()
        method, path = scope["method"], raw_path[:MAX_PATH].decode("latin-1")
        version = scope.get("http_version", "1.1")
        logger.info(
            '%s "%s %s HTTP/%s" %s %d B %.1f ms',
            describe_peer(peer),
            method,
            path,
            version,
            "-" if status is None else status,
            sent,
            seconds * 1000,
            extra={
                **peer,
                "method": method,
                "path": path,
                "http_version": version,
                "status": status,
                "bytes": sent,
                "duration_ms": round(seconds * 1000, 3),
            },
        )
