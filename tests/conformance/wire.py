"""Speaking the wire protocol raw: JSON (or MessagePack) over a WebSocket.

Independent of the gateway's code: trio-websocket for the WebSocket, the JSON
Schema (exported by ``protocol``, the protocol's published contract) for shapes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, Final

import jsonschema
import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from protocol import json_schema

TIMEOUT: Final = 10.0
MSGPACK: Final = "realtime.v1.msgpack"
JSON: Final = "realtime.v1.json"


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    return jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/ServerMessage"})


def check_shape(message: dict[str, Any]) -> None:
    """Every server message: valid per the schema, with a UTC ``Z`` timestamp."""
    _validator().validate(message)
    assert message["timestamp"].endswith("Z"), message


class Peer:
    """One raw connection."""

    def __init__(self, ws: WebSocketConnection, *, packed: bool) -> None:
        self.ws = ws
        self.packed = packed
        self.welcome: dict[str, Any] = {}

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, str | bytes):
            await self.ws.send_message(message)
        elif self.packed:
            await self.ws.send_message(msgpack.packb(message))
        else:
            await self.ws.send_message(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        data = await self.ws.get_message()
        if self.packed:
            assert isinstance(data, bytes), "MessagePack travels in binary frames"
            message: dict[str, Any] = msgpack.unpackb(data)
        else:
            assert isinstance(data, str), "JSON travels in text frames"
            message = json.loads(data)
        check_shape(message)
        return message

    async def next(self, *types: str) -> dict[str, Any]:
        """The next message of one of ``types``, skipping others (prices, mostly)."""
        while True:
            message = await self.receive()
            if message["type"] in types:
                return message

    async def request(self, message: dict[str, Any] | str | bytes, *types: str) -> dict[str, Any]:
        await self.send(message)
        return await self.next(*types)

    async def collect_until(
        self, done: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """Every message until ``done`` holds for them. Waits as long as it takes: the
        caller's ``fail_after`` bounds it (a server may tick at any rate)."""
        received: list[dict[str, Any]] = []
        while not done(received):
            received.append(await self.receive())
        return received

    async def replies_until_closed(self) -> list[dict[str, Any]]:
        """Every message until the server closes the connection."""
        received = []
        try:
            while True:
                received.append(await self.receive())
        except ConnectionClosed:
            return received

    async def closed(self) -> tuple[int, str]:
        """Read until the server closes; its close code and reason."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as closed:
            reason = closed.reason
        assert reason is not None
        return reason.code, reason.reason or ""


@asynccontextmanager
async def raw(url: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    """``open_websocket_url`` that also closes its socket when the server closed first
    (trio-websocket 0.12 leaks it then)."""
    ws = None
    try:
        async with open_websocket_url(url, **kwargs) as ws:
            yield ws
    finally:
        if ws is not None:
            await trio.aclose_forcefully(ws._stream)


@asynccontextmanager
async def peer(url: str, *, packed: bool = False, **kwargs: Any) -> AsyncIterator[Peer]:
    """A connection whose ``welcome`` has been received and checked."""
    if packed:
        kwargs.setdefault("subprotocols", [MSGPACK])
    async with raw(url, **kwargs) as ws:
        connection = Peer(ws, packed=packed)
        connection.welcome = await connection.receive()
        assert connection.welcome["type"] == "welcome"
        yield connection
