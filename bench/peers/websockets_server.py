"""Reference: python ``websockets`` (the asyncio API) fanning out with ``broadcast()``.

As the library's broadcasting guide recommends
(https://websockets.readthedocs.io/en/stable/topics/broadcast.html): each message is
serialized once and handed to ``websockets.broadcast`` with the set of subscribers,
which writes without awaiting any of them.

    python -m bench.peers.websockets_server --port 8002 --symbols AAPL,MSFT --tick-rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from bench.peers._sim import Market, add_arguments, run_feed, stamp


async def main_async(args: argparse.Namespace) -> None:
    market = Market(args.symbols.split(","))
    subscribers: dict[str, set[ServerConnection]] = {s: set() for s in market.symbols}
    connections: dict[ServerConnection, set[str]] = {}

    def publish(symbol: str, message: dict[str, object]) -> None:
        broadcast(subscribers[symbol], json.dumps(message))

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/ws/stats":
            body = json.dumps(
                {
                    "total_connections": len(connections),
                    "symbol_subscriptions": sum(len(s) for s in connections.values()),
                }
            ).encode()
            headers = Headers([("Content-Type", "application/json")])
            return Response(http.HTTPStatus.OK, "OK", headers, body)
        return None

    async def handler(websocket: ServerConnection) -> None:
        client_id = websocket.request.path.removeprefix("/ws/") if websocket.request else ""
        mine: set[str] = set()
        connections[websocket] = mine
        try:
            await websocket.send(
                json.dumps(
                    {
                        "type": "welcome",
                        "client_id": client_id,
                        "symbols": market.symbols,
                        "timestamp": stamp(),
                    }
                )
            )
            async for raw in websocket:
                request = json.loads(raw)
                if request.get("type") == "subscribe" and request.get("channel") == "prices":
                    symbols = [
                        s for s in request.get("symbols", market.symbols) if s in subscribers
                    ]
                    for symbol in symbols:
                        subscribers[symbol].add(websocket)
                    mine.update(symbols)
                    await websocket.send(
                        json.dumps(
                            {
                                "type": "subscribed",
                                "channel": "prices",
                                "symbols": symbols,
                                "id": request.get("id"),
                                "timestamp": stamp(),
                            }
                        )
                    )
                elif request.get("type") == "ping":
                    await websocket.send(
                        json.dumps({"type": "pong", "id": request.get("id"), "timestamp": stamp()})
                    )
        finally:
            for symbol in mine:
                subscribers[symbol].discard(websocket)
            del connections[websocket]

    async with serve(handler, "127.0.0.1", args.port, process_request=process_request) as server:
        if args.feeds == "true":
            await asyncio.gather(
                run_feed(market, args.tick_rate, args.updates_per_tick, publish),
                server.serve_forever(),
            )
        else:
            await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
