"""CORS: which other sites' pages may call the gateway's HTTP API from a browser.

Theory of operation
-------------------
:class:`CORS` wraps the gateway's ASGI app. The dashboard is served by the gateway
itself (same origin) and needs none of this; ``--cors-origins`` names the other
origins whose pages may call ``/api/...``, ``/ws/stats``, ``/health`` and
``/metrics`` with ``fetch`` (``*``: any origin). WebSocket upgrades never come here:
their origin is the WebSocket handshake's business.

- A request without ``Origin`` (curl, programs, most same-origin ``GET``) passes
  untouched.
- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``),
  whatever the path, is answered here and never reaches the app. From an allowed
  origin, for a method of :data:`ALLOWED_METHODS` and headers among
  :data:`ALLOWED_HEADERS`: 204 with ``Access-Control-Allow-Origin`` (the origin, or
  ``*`` when any is allowed), ``-Allow-Methods``, ``-Allow-Headers``, ``-Max-Age``
  (:data:`PREFLIGHT_MAX_AGE`) and ``Vary: Origin``. Otherwise 403 with a JSON
  ``{"error": ...}`` saying why and no CORS header: the browser refuses to send the
  request, and whoever reads the answer learns what to change.
- Any other request with an allowed ``Origin`` gets ``Access-Control-Allow-Origin``
  and ``Access-Control-Expose-Headers: Location`` added to the app's answer. From
  another origin it gets the app's answer alone, which the browser keeps from the
  page. (A browser preflights every call that carries ``Authorization``, so the
  API's writes never run for a refused origin.)
- Once any origin is allowed, every answer carries ``Vary: Origin``, so that a cache
  never hands one origin's answer to another.

No credentials (cookies) are ever allowed: the API's key travels in
``Authorization``, which the page sets itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson

from ._config import ANY_ORIGIN

logger = logging.getLogger("realtime.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Methods a cross-origin page may use: those of the HTTP API's routes.
ALLOWED_METHODS: Final = ("GET", "HEAD", "POST", "DELETE")
#: Request headers a cross-origin page may send beyond the safelisted ones: the API
#: key and the JSON body's type.
ALLOWED_HEADERS: Final = ("Authorization", "Content-Type")
#: Seconds a browser may cache a preflight's answer.
PREFLIGHT_MAX_AGE: Final = 600

_METHODS: Final = ", ".join(ALLOWED_METHODS).encode()
_HEADERS: Final = ", ".join(ALLOWED_HEADERS).encode()
_HEADER_NAMES: Final = frozenset(name.lower() for name in ALLOWED_HEADERS)


class CORS:
    """ASGI middleware answering preflights and marking answers (see the module doc)."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.any_origin = ANY_ORIGIN in origins
        self.origins = frozenset(origins)
        #: Preflights refused since start.
        self.refused = 0

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send if not self.origins else _varying(send))
            return
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(scope, send, origin, headers)
            return
        if not self.allows(origin.decode("latin-1")):
            await self.app(scope, receive, send if not self.origins else _varying(send))
            return
        allow_origin = b"*" if self.any_origin else origin
        extra = [
            (b"access-control-allow-origin", allow_origin),
            (b"access-control-expose-headers", b"Location"),
        ]
        await self.app(scope, receive, _varying(send, extra))

    async def _preflight(
        self, scope: Scope, send: Send, origin: bytes, headers: dict[bytes, bytes]
    ) -> None:
        text = origin.decode("latin-1")
        method = headers[b"access-control-request-method"].decode("latin-1").strip()
        requested = [
            name.strip().lower()
            for name in headers.get(b"access-control-request-headers", b"")
            .decode("latin-1")
            .split(",")
            if name.strip()
        ]
        problem = None
        if not self.allows(text):
            problem = f"Origin {text[:200]} may not call this API: the gateway allows " + (
                "no other origin (start it with --cors-origins ORIGIN to allow one)"
                if not self.origins
                else "only the origins of its --cors-origins"
            )
        elif method not in ALLOWED_METHODS:
            problem = (
                f"Method {method[:20]!r} is not allowed across origins; "
                f"use {', '.join(ALLOWED_METHODS)}"
            )
        else:
            unknown = [name for name in requested if name not in _HEADER_NAMES]
            if unknown:
                problem = (
                    f"Header {unknown[0][:64]!r} is not allowed across origins; "
                    f"the API reads {' and '.join(ALLOWED_HEADERS)}"
                )
        if problem is not None:
            self.refused += 1
            logger.info("[API] Refused CORS preflight from %s: %s", text[:200], problem)
            body = orjson.dumps({"error": problem})
            response = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"vary", b"Origin"),
            ]
            await send({"type": "http.response.start", "status": 403, "headers": response})
            await send({"type": "http.response.body", "body": body})
            return
        response = [
            (b"access-control-allow-origin", b"*" if self.any_origin else origin),
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-allow-headers", _HEADERS),
            (b"access-control-max-age", b"%d" % PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
        ]
        # 204: no body, and no Content-Length, which a 204 must not carry.
        await send({"type": "http.response.start", "status": 204, "headers": response})
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lowercase name; the first of repeated ones."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(bytes(name).lower(), bytes(value))
    return found


def _varying(send: Send, extra: Sequence[tuple[bytes, bytes]] = ()) -> Send:
    """``send`` with ``Vary: Origin`` (merged into the app's own ``Vary``) and ``extra``
    headers added to the response's start."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), *extra]
            for i, (name, value) in enumerate(headers):
                if bytes(name).lower() == b"vary":
                    if b"origin" not in bytes(value).lower():
                        headers[i] = (name, bytes(value) + b", Origin")
                    break
            else:
                headers.append((b"vary", b"Origin"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
