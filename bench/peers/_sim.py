"""The reference servers' simulated market: the same load as the gateway's price feed.

Each tick steps the next ``updates_per_tick`` symbols round-robin with a random walk and
hands every ``price_update`` (stamped at publish time, RFC 3339 UTC with microseconds)
to the server's own publish function. The server frameworks differ; the load does not.
Only the standard library, so the peers depend on nothing of the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every Python peer takes (the harness passes the same to all servers)."""
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--symbols", required=True, help="comma-separated universe")
    parser.add_argument("--tick-rate", type=float, default=1.0)
    parser.add_argument("--updates-per-tick", type=int, default=0, help="0: the whole universe")
    parser.add_argument("--feeds", default="true", choices=("true", "false"))


def stamp() -> str:
    """Now, as the gateway writes it: ``2026-11-26T14:30:00.123456Z``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Market:
    """A random walk per symbol, rounded like the gateway's quotes."""

    def __init__(self, symbols: list[str], seed: int = 1) -> None:
        self.symbols = symbols
        self.rng = random.Random(seed)
        self.open = {s: 50.0 + self.rng.random() * 400.0 for s in symbols}
        self.price = dict(self.open)
        self.volume = dict.fromkeys(symbols, 1_000_000)
        self.seq = dict.fromkeys(symbols, 0)

    def update(self, symbol: str) -> dict[str, object]:
        price = self.price[symbol] * (1.0 + self.rng.gauss(0.0, 0.0005))
        self.price[symbol] = price
        self.volume[symbol] += self.rng.randrange(100, 5_000)
        self.seq[symbol] += 1
        open_ = self.open[symbol]
        return {
            "type": "price_update",
            "symbol": symbol,
            "data": {
                "price": round(price, 2),
                "change": round(price - open_, 2),
                "change_pct": round((price - open_) / open_ * 100.0, 2),
                "volume": self.volume[symbol],
                "bid": round(price * 0.9998, 2),
                "ask": round(price * 1.0002, 2),
            },
            "seq": self.seq[symbol],
            "timestamp": stamp(),
        }


async def run_feed(
    market: Market,
    tick_rate: float,
    updates_per_tick: int,
    publish: Callable[[str, dict[str, object]], object],
) -> None:
    """Publish on absolute deadlines (no drift); a late tick runs at once, missed ones are
    skipped, as the gateway's feed does. ``publish`` may return an awaitable."""
    symbols, n = market.symbols, len(market.symbols)
    per_tick = updates_per_tick or n
    interval = 1.0 / tick_rate
    start = time.monotonic()
    cursor = 0
    k = 0
    while True:
        delay = start + k * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(per_tick):
            symbol = symbols[cursor]
            cursor = cursor + 1 if cursor + 1 < n else 0
            result = publish(symbol, market.update(symbol))
            if asyncio.iscoroutine(result):
                await result
        k = max(k + 1, int((time.monotonic() - start) / interval))
