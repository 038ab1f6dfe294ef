"""What one ``GET /ws/stats`` costs with 50,000 clients registered.

    python -m bench.stats_cost [--clients 50000] [--symbols-per-client 10] [--repeat 7]

Runs the real gateway (``realtime.serve``, no feeds) in this process and registers
``--clients`` sessions with its hub, each subscribed to ``prices`` (that many
symbols; every fifth to every symbol) and ``alerts``, through the same sessions and
subscription state a connection gets, but without sockets: 50,000 real connections
would measure the clients, not the endpoint. Then it asks for pages over real HTTP
on loopback and prints, per query, the median wall time of ``--repeat`` requests
(server and the in-process client together, one core) and the body's size; and,
for comparison, ``GET /metrics`` (whose gauges walk every connection) and what
sorting every client id per request would cost.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import typing
from types import SimpleNamespace

import trio

from protocol import Channel
from realtime import Config, Server, serve
from realtime._sessions import _Session
from realtime.ws import WebSocketConnection
from tests.realtime.helpers import http_get


def register(server: Server, clients: int, symbols_per_client: int) -> None:
    """``clients`` sessions in the hub, subscribed as the module doc says."""
    sessions, hub = server.sessions, server.hub
    universe = hub.symbols
    socketless = typing.cast(WebSocketConnection, SimpleNamespace(subprotocol=None))
    now = trio.current_time()
    order = list(range(clients))
    random.Random(7).shuffle(order)  # connections arrive in no particular id order
    for n in order:
        session = _Session(socketless, f"client-{n:06d}", sessions, now)
        hub.register(session)
        subscriptions = session.requests.subscriptions
        if n % 5 == 0:
            symbols = None
        else:
            first = n % len(universe)
            symbols = [universe[(first + k) % len(universe)] for k in range(symbols_per_client)]
        hub.apply(session, subscriptions.subscribe(Channel.PRICES, symbols, universe=hub.universe))
        hub.apply(session, subscriptions.subscribe(Channel.ALERTS))


async def timed(port: int, target: str, repeat: int) -> tuple[float, int]:
    """Median seconds of ``repeat`` GETs of ``target``, and the body's bytes."""
    seconds = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        status, body = await http_get(port, target)
        seconds.append(time.perf_counter() - started)
        assert status == 200, body[:200]
        size = len(body)
    return statistics.median(seconds), size


async def main_async(args: argparse.Namespace) -> None:
    config = Config(
        port=0, feeds=False, symbols=args.universe, max_connections=max(50_000, args.clients)
    )
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(serve, config)
        started = time.perf_counter()
        register(server, args.clients, args.symbols_per_client)
        print(
            f"registered {server.hub.connection_count:,} clients "
            f"({time.perf_counter() - started:.1f} s); universe {args.universe} symbols; "
            f"median of {args.repeat} requests each"
        )
        targets = [
            "/ws/stats?limit=0",
            "/ws/stats?limit=100",
            "/ws/stats",
            "/ws/stats?after=client-025000",
            "/ws/stats?limit=10000",
            "/metrics",
        ]
        for target in targets:
            seconds, size = await timed(server.port, target, args.repeat)
            print(f"  GET {target:32} {seconds * 1000:8.2f} ms {size:>12,} bytes")
        ids = [outbox.client_id for outbox in server.hub.outboxes()]  # in arrival order
        started = time.perf_counter()
        sorted(ids)
        sorting = time.perf_counter() - started
        print(f"  (sorting the {len(ids):,} ids per request instead: {sorting * 1000:.2f} ms)")
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--symbols-per-client", type=int, default=10)
    parser.add_argument("--universe", type=int, default=100, help="symbols in the universe")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
