"""Feed hooks for the tests of ``--feed module:callable`` (tests/realtime/test_universe.py)."""

from __future__ import annotations

import trio

from feeds import Publisher
from protocol import Channel, PriceData
from realtime import PriceUniverse

#: Not a function: ``--feed tests.realtime.feed_hooks:NOT_A_FEED`` is refused.
NOT_A_FEED = 42


def quote(price: float) -> PriceData:
    return PriceData(
        price=price, change=0.0, change_pct=0.0, volume=0, bid=price - 0.01, ask=price + 0.01
    )


async def orcl(publisher: Publisher, *, universe: PriceUniverse) -> None:
    """Adds ORCL to the universe, then publishes a price of it every 50 ms."""
    universe.add(["ORCL"])
    price = 150.0
    while True:
        await publisher.publish(Channel.PRICES, quote(price), symbol="ORCL")
        price = round(price + 0.01, 2)
        await trio.sleep(0.05)


async def outside(publisher: Publisher, *, universe: PriceUniverse) -> None:
    """Publishes a price of a symbol it never added."""
    await publisher.publish(Channel.PRICES, quote(10.0), symbol="NOPE")
