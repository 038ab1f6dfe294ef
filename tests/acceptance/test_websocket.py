"""The spec's WebSocket acceptance tests, run against a gateway that is already running.

    python tests/acceptance/test_websocket.py [PORT] [--host HOST] [--timeout SECONDS]

The port is the argument, else ``REALTIME_PORT``, else ``PORT``, else 8000; the host
127.0.0.1. Prints the spec's five lines, ``✅ PASS - Connection`` ... ``✅ PASS -
Multiple Clients``, or ``❌ FAIL - NAME: reason`` for a check that failed, and exits
0 when all five passed, 1 otherwise (2 for bad arguments). Every check has its own
deadline (``--timeout``, 10 s) and runs whatever the others did.

A script, not a pytest module: it needs only trio and trio-websocket (dependencies of
the project) and the standard library, so it runs from a plain ``python`` in the venv
against any server that speaks the spec. ``tests/acceptance/conftest.py`` keeps pytest
from collecting it; ``test_acceptance.py`` runs it against a gateway of its own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Final

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

DEFAULT_PORT: Final = 8000
DEFAULT_TIMEOUT: Final = 10.0
CHANNELS: Final = ("prices", "alerts", "signals", "portfolio", "notifications")
PRICE_FIELDS: Final = ("price", "change", "change_pct", "volume", "bid", "ask")


class CheckFailed(Exception):
    """A check's verdict: the reason is printed after ``❌ FAIL - NAME:``."""


class Gateway:
    """Where the gateway is, and a unique prefix for this run's client ids."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.prefix = f"acceptance-{os.getpid()}"

    def url(self, client_id: str) -> str:
        return f"ws://{self.host}:{self.port}/ws/{client_id}"


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message = json.loads(await ws.get_message())
    if not isinstance(message, dict) or "type" not in message:
        raise CheckFailed(f"the server sent something that is no message: {message!r:.200}")
    return message


async def next_of(ws: WebSocketConnection, *types: str) -> dict[str, Any]:
    """The next message of one of ``types``, skipping any other (prices, notifications)."""
    while True:
        message = await receive(ws)
        if message["type"] in types:
            return message


async def send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(message))


async def welcome_of(ws: WebSocketConnection, client_id: str) -> dict[str, Any]:
    welcome = await receive(ws)
    if welcome["type"] != "welcome":
        raise CheckFailed(f"the first message is {welcome['type']!r}, not 'welcome'")
    if welcome.get("client_id") != client_id:
        raise CheckFailed(f"welcome names client {welcome.get('client_id')!r}, not {client_id!r}")
    return welcome


def two_symbols(welcome: dict[str, Any]) -> list[str]:
    """AAPL and MSFT as in the spec, or the first two symbols the server offers."""
    symbols = welcome.get("symbols") or []
    if {"AAPL", "MSFT"} <= set(symbols):
        return ["AAPL", "MSFT"]
    if len(symbols) < 2:
        raise CheckFailed(f"welcome offers fewer than two symbols: {symbols!r}")
    return [str(symbol) for symbol in symbols[:2]]


async def subscribe_prices(ws: WebSocketConnection, symbols: list[str]) -> None:
    await send(ws, {"type": "subscribe", "channel": "prices", "symbols": symbols})
    reply = await next_of(ws, "subscribed", "error")
    if reply["type"] == "error":
        raise CheckFailed(f"subscribe to prices {symbols} refused: {reply.get('error')}")
    if reply.get("channel") != "prices" or sorted(reply.get("symbols") or []) != sorted(symbols):
        raise CheckFailed(f"the ack does not confirm prices {symbols}: {reply!r:.200}")


async def live_price(ws: WebSocketConnection, symbol: str) -> dict[str, Any]:
    """A ``price_update`` of ``symbol`` that follows another one: a live update, not
    only the last price the server sends right after a subscribe."""
    seen = 0
    while True:
        update = await next_of(ws, "price_update")
        if update.get("symbol") != symbol:
            raise CheckFailed(f"got a price of {update.get('symbol')!r}, subscribed to {symbol}")
        data = update.get("data")
        if not isinstance(data, dict) or any(field not in data for field in PRICE_FIELDS):
            raise CheckFailed(f"price_update data lacks one of {PRICE_FIELDS}: {data!r:.200}")
        if not (isinstance(data["price"], int | float) and data["price"] > 0):
            raise CheckFailed(f"price_update has a price of {data['price']!r}")
        if not data["bid"] <= data["ask"]:
            raise CheckFailed(f"price_update has bid {data['bid']} above ask {data['ask']}")
        if not str(update.get("timestamp", "")).endswith("Z"):
            raise CheckFailed(f"price_update timestamp is not UTC: {update.get('timestamp')!r}")
        seen += 1
        if seen == 2:
            return update


async def http_get_json(gateway: Gateway, target: str) -> Any:
    """``GET target`` over HTTP/1.1 with ``Connection: close``; the JSON body."""
    stream = await trio.open_tcp_stream(gateway.host, gateway.port)
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: {gateway.host}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode("ascii"))
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 200 " not in f"{status_line} ":
        raise CheckFailed(f"GET {target} answered {status_line!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return json.loads(body)


def _unchunk(body: bytes) -> bytes:
    data = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        data, body = data + body[:size], body[size + 2 :]
    return data


# --- the spec's five checks ---------------------------------------------------------------


async def check_connection(gateway: Gateway) -> None:
    client_id = f"{gateway.prefix}-connection"
    async with open_websocket_url(gateway.url(client_id)) as ws:
        welcome = await welcome_of(ws, client_id)
        missing = [channel for channel in CHANNELS if channel not in welcome.get("channels", [])]
        if missing:
            raise CheckFailed(f"welcome does not offer the channels {missing}")


async def check_subscription(gateway: Gateway) -> None:
    client_id = f"{gateway.prefix}-subscription"
    async with open_websocket_url(gateway.url(client_id)) as ws:
        symbols = two_symbols(await welcome_of(ws, client_id))
        await subscribe_prices(ws, symbols)
        await send(ws, {"type": "subscribe", "channel": "alerts"})
        reply = await next_of(ws, "subscribed", "error")
        if reply["type"] != "subscribed" or reply.get("channel") != "alerts":
            raise CheckFailed(f"subscribe to alerts not confirmed: {reply!r:.200}")
        await send(ws, {"type": "subscribe", "channel": "invalid_channel"})
        error = await next_of(ws, "error", "subscribed")
        if error["type"] != "error" or "invalid_channel" not in str(error.get("error")):
            raise CheckFailed(f"an unknown channel is not refused with an error: {error!r:.200}")


async def check_price_updates(gateway: Gateway) -> None:
    client_id = f"{gateway.prefix}-prices"
    async with open_websocket_url(gateway.url(client_id)) as ws:
        symbol = two_symbols(await welcome_of(ws, client_id))[0]
        await subscribe_prices(ws, [symbol])
        await live_price(ws, symbol)


async def check_ping_pong(gateway: Gateway) -> None:
    client_id = f"{gateway.prefix}-ping"
    async with open_websocket_url(gateway.url(client_id)) as ws:
        await welcome_of(ws, client_id)
        await send(ws, {"type": "ping"})
        pong = await next_of(ws, "pong")
        if not str(pong.get("timestamp", "")).endswith("Z"):
            raise CheckFailed(f"pong timestamp is not UTC: {pong.get('timestamp')!r}")
        await send(ws, {"type": "ping", "id": "acceptance"})
        pong = await next_of(ws, "pong")
        if pong.get("id") != "acceptance":
            raise CheckFailed(f"pong does not echo the ping's id: {pong!r:.200}")


async def check_multiple_clients(gateway: Gateway) -> None:
    client_ids = [f"{gateway.prefix}-multi-{n}" for n in range(3)]
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(open_websocket_url(gateway.url(client_id)))
            for client_id in client_ids
        ]
        symbols: list[str] = []
        for ws, client_id in zip(sockets, client_ids, strict=True):
            symbols = two_symbols(await welcome_of(ws, client_id))
        # Each on its own selection: the first two on one symbol each, the third on both.
        selections = [[symbols[0]], [symbols[1]], symbols]
        for ws, selection in zip(sockets, selections, strict=True):
            await subscribe_prices(ws, selection)
        for ws, selection in zip(sockets, selections, strict=True):
            update = await next_of(ws, "price_update")
            if update.get("symbol") not in selection:
                raise CheckFailed(f"a client on {selection} got a price of {update.get('symbol')}")
        # All three connected at once, as the server sees it.
        stats = await http_get_json(gateway, f"/ws/stats?after={gateway.prefix}-multi&limit=3")
        listed = stats.get("clients", [])
        if not set(client_ids) <= set(listed):
            raise CheckFailed(f"/ws/stats does not list all of {client_ids}: {listed!r:.200}")
        if stats.get("total_connections", 0) < 3:
            raise CheckFailed(f"/ws/stats counts {stats.get('total_connections')} connections")


CHECKS: Final[tuple[tuple[str, Callable[[Gateway], Awaitable[None]]], ...]] = (
    ("Connection", check_connection),
    ("Subscription", check_subscription),
    ("Price Updates", check_price_updates),
    ("Ping/Pong", check_ping_pong),
    ("Multiple Clients", check_multiple_clients),
)


def describe(exc: BaseException, gateway: Gateway, seconds: float) -> str:
    """The reason a check failed, from what it raised (through trio-websocket's
    exception groups, which wrap a single error)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, CheckFailed):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"nothing conclusive within {seconds:g} s"
    if isinstance(exc, OSError):
        return (
            f"cannot reach {gateway.host}:{gateway.port}: {exc} "
            "(is the gateway running? `make run` starts it on port 8000)"
        )
    return f"{type(exc).__name__}: {exc}"


async def run_checks(gateway: Gateway, seconds: float) -> bool:
    """Run every check in turn, each within ``seconds``, print its line; whether all
    passed."""
    passed = True
    for name, check in CHECKS:
        reason = None
        try:
            with trio.fail_after(seconds):
                await check(gateway)
        except Exception as exc:  # any failure of the server or the exchange
            reason = describe(exc, gateway, seconds)
        passed &= reason is None
        line = f"✅ PASS - {name}" if reason is None else f"❌ FAIL - {name}: {reason}"
        print(line, flush=True)
    return passed


def _port(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {raw!r}")
    return int(raw)


def _timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"a timeout is seconds above 0, got {raw!r}")
    return value


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The spec's WebSocket acceptance tests against a running gateway."
    )
    parser.add_argument(
        "port",
        nargs="?",
        type=_port,
        help="the gateway's port (default: $REALTIME_PORT, else $PORT, else 8000)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="the gateway's host (127.0.0.1)")
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help=f"seconds each check may take (default {DEFAULT_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)
    if args.port is None:
        for variable in ("REALTIME_PORT", "PORT"):
            raw = os.environ.get(variable)
            if raw:
                try:
                    args.port = _port(raw)
                except argparse.ArgumentTypeError as exc:
                    parser.error(f"${variable}: {exc}")
                break
        else:
            args.port = DEFAULT_PORT
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # the marks print under any locale
        sys.stdout.reconfigure(encoding="utf-8")
    passed = trio.run(run_checks, Gateway(args.host, args.port), args.timeout)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
