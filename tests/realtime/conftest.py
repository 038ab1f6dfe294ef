"""Shared helpers for the real-socket tests of the listener and WebSockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from realtime.ws import Listener, WebSocketHandler, serve

HOST = "127.0.0.1"


async def _tiny_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app: /health, /ws/stats, POST /echo, 404 otherwise."""
    assert scope["type"] == "http"  # lifespan is off: nothing else may arrive
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/health":
        status, payload = 200, b'{"status":"ok"}'
    elif path == "/ws/stats":
        status, payload = 200, b'{"total_connections":0}'
    elif path == "/echo" and scope["method"] == "POST":
        status, payload = 200, body
    else:
        status, payload = 404, b"not found"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", b"%d" % len(payload)),
                (b"x-path", path.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


StartListener = Callable[..., Awaitable[Listener]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


@pytest.fixture
def tiny_app() -> ASGIApp:
    """The test ASGI app: /health, /ws/stats, POST /echo, 404 otherwise."""
    return _tiny_app


@pytest.fixture
def start_listener(nursery: trio.Nursery) -> StartListener:
    """``await start_listener(websocket_handler, **serve_kwargs)``.

    A running listener on 127.0.0.1 and a free port (or ``port=``), serving the
    `tiny_app` fixture's app unless told otherwise; it lives as long as the test.
    """

    async def start(websocket_handler: WebSocketHandler, port: int = 0, **kwargs: Any) -> Listener:
        kwargs.setdefault("asgi_app", _tiny_app)
        listener: Listener = await nursery.start(
            partial(serve, HOST, port, websocket_handler=websocket_handler, **kwargs)
        )
        return listener

    return start


OpenClient = Callable[..., AbstractAsyncContextManager[trio_websocket.WebSocketConnection]]


@asynccontextmanager
async def _open_client(
    url: str, **kwargs: Any
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(url, **kwargs) as ws:
        try:
            yield ws
        finally:
            # trio-websocket 0.12.2 never closes its socket when the *server*
            # starts the closing handshake (its aclose() returns early once a
            # close reason is set); filterwarnings=error then fails some later
            # test with a ResourceWarning. Close it ourselves.
            await trio.aclose_forcefully(ws._stream)


@pytest.fixture
def open_client() -> OpenClient:
    """``async with open_client(url, **kwargs) as ws``: trio_websocket's
    ``open_websocket_url``, minus its socket leak."""
    return _open_client


@pytest.fixture
def socket_clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    """Trio's virtual clock, for tests whose server keeps time (heartbeats, rate limits,
    write deadlines) over real sockets: those deadlines then pass only when everything
    is idle, never because the machine was slow or busy.

    It jumps to the next deadline once every task has been blocked for 10 ms of real
    time, not at once, so bytes still on their way through loopback do not count as
    idleness (trio.testing.MockClock.autojump_threshold).
    """
    mock_clock.autojump_threshold = 0.01
    return mock_clock
