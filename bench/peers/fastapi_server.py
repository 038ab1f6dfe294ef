"""Reference: the seed-style FastAPI + uvicorn server most users write first.

A ``ConnectionManager`` keeps the connections and their symbols; the feed loops over
them and awaits ``send_json`` for each subscriber, as FastAPI's WebSocket guide shows
(https://fastapi.tiangolo.com/advanced/websockets/#handling-disconnections-and-multiple-clients).

    python -m bench.peers.fastapi_server --port 8001 --symbols AAPL,MSFT --tick-rate 10
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.peers._sim import Market, add_arguments, run_feed, stamp


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, WebSocket] = {}
        self.subscriptions: dict[str, set[str]] = {}

    async def connect(self, websocket: WebSocket, client_id: str) -> None:
        await websocket.accept()
        self.active_connections[client_id] = websocket
        self.subscriptions[client_id] = set()

    def disconnect(self, client_id: str) -> None:
        self.active_connections.pop(client_id, None)
        self.subscriptions.pop(client_id, None)

    async def broadcast_price(self, symbol: str, message: dict[str, Any]) -> None:
        for client_id, websocket in list(self.active_connections.items()):
            if symbol in self.subscriptions.get(client_id, ()):
                try:
                    await websocket.send_json(message)
                except Exception:  # the seed's pattern: a failed send drops the client
                    self.disconnect(client_id)


def create_app(args: argparse.Namespace) -> FastAPI:
    manager = ConnectionManager()
    market = Market(args.symbols.split(","))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if args.feeds == "true":
            task = asyncio.create_task(
                run_feed(market, args.tick_rate, args.updates_per_tick, manager.broadcast_price)
            )
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ws/stats")
    async def stats() -> dict[str, Any]:
        return {
            "total_connections": len(manager.active_connections),
            "symbol_subscriptions": sum(len(s) for s in manager.subscriptions.values()),
        }

    @app.websocket("/ws/{client_id}")
    async def websocket_endpoint(websocket: WebSocket, client_id: str) -> None:
        await manager.connect(websocket, client_id)
        await websocket.send_json(
            {
                "type": "welcome",
                "client_id": client_id,
                "symbols": market.symbols,
                "timestamp": stamp(),
            }
        )
        try:
            while True:
                request = await websocket.receive_json()
                if request.get("type") == "subscribe" and request.get("channel") == "prices":
                    symbols = [
                        s for s in request.get("symbols", market.symbols) if s in market.price
                    ]
                    manager.subscriptions[client_id].update(symbols)
                    await websocket.send_json(
                        {
                            "type": "subscribed",
                            "channel": "prices",
                            "symbols": symbols,
                            "id": request.get("id"),
                            "timestamp": stamp(),
                        }
                    )
                elif request.get("type") == "ping":
                    await websocket.send_json(
                        {"type": "pong", "id": request.get("id"), "timestamp": stamp()}
                    )
        except WebSocketDisconnect:
            manager.disconnect(client_id)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    uvicorn.run(create_app(args), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
