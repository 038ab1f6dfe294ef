"""An outside price feed: the gateway's simulated market replaced by prices that another
process publishes over HTTP, with ``realtime.publish``.

Start the gateway without its feeds, with the universe this feed publishes, then the
feed (the same API key in both)::

    export REALTIME_API_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    realtime serve --feeds false --universe ORCL,SAP,SHOP
    python examples/external_feed.py --symbols ORCL,SAP,SHOP

Open the dashboard, or ``realtime listen --channel prices``: the prices are this
script's. Each tick moves every symbol a little (a random walk around an opening
price) and publishes the whole tick as one batch: one request per tick, not per
symbol. It runs on asyncio (``AsyncPublishClient`` runs on Trio just the same);
replace ``quotes()`` with your market data.

``--ticks N`` stops after N ticks (the test runs it so); the exit status is 1, with
the gateway's reason, when the gateway refuses a batch (a symbol outside its
``--universe``: ``unknown_symbol``; a wrong key: ``unauthorized``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Iterator

from protocol import PriceData
from realtime.publish import AsyncPublishClient, PublishError, price


def quotes(symbols: list[str], seed: int | None) -> Iterator[dict[str, PriceData]]:
    """One quote per symbol per tick: a random walk from a random opening price."""
    rng = random.Random(seed)
    opens = {symbol: round(rng.uniform(20.0, 400.0), 2) for symbol in symbols}
    last = dict(opens)
    volume = dict.fromkeys(symbols, 0)
    while True:
        tick = {}
        for symbol in symbols:
            now = last[symbol] = max(0.01, round(last[symbol] * (1 + rng.gauss(0, 0.001)), 2))
            volume[symbol] += rng.randint(100, 5_000)
            opening = opens[symbol]
            tick[symbol] = PriceData(
                price=now,
                change=round(now - opening, 2),
                change_pct=round((now - opening) / opening * 100, 2),
                volume=volume[symbol],
                bid=round(now - 0.01, 2),
                ask=round(now + 0.01, 2),
            )
        yield tick


async def run(url: str | None, symbols: list[str], interval: float, ticks: int | None) -> int:
    published = 0
    # URL and key default to REALTIME_URL (or REALTIME_PORT) and REALTIME_API_KEY.
    async with AsyncPublishClient(url) as gateway:
        for tick in quotes(symbols, seed=None):
            try:
                await gateway.publish_batch(price(symbol, quote) for symbol, quote in tick.items())
            except PublishError as error:
                print(f"external_feed: not published: {error}", file=sys.stderr)
                return 1
            published += 1
            if ticks is not None and published >= ticks:
                break
            await asyncio.sleep(interval)
    print(f"external_feed: published {published} ticks of {len(symbols)} symbols")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the gateway (default: REALTIME_URL, else 127.0.0.1:8000)")
    parser.add_argument("--symbols", default="ORCL,SAP,SHOP", help="comma-separated tickers")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--ticks", type=int, help="stop after this many ticks")
    args = parser.parse_args()
    symbols = [symbol.strip() for symbol in args.symbols.split(",") if symbol.strip()]
    sys.exit(asyncio.run(run(args.url, symbols, args.interval, args.ticks)))


if __name__ == "__main__":
    main()
