"""A recording Publisher for the feeds' unit tests: it stands in for the bus."""

from __future__ import annotations

import attrs
import trio

import protocol as p


@attrs.define
class Published:
    time: float
    channel: p.Channel
    data: p.EventData
    symbol: str | None
    to: str | None
    user: str | None = None


@attrs.define
class Recorder:
    """Records every publish with its (virtual) time.

    Like the in-process bus with room, ``publish`` is not a checkpoint: a feed's whole
    tick is recorded (and reaches the tap's streams) before any consumer runs, so
    runs on the autojump clock do not depend on Trio's scheduling order.
    """

    items: list[Published] = attrs.field(factory=list)

    async def publish(
        self,
        channel: p.Channel,
        data: p.EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        self.items.append(Published(trio.current_time(), channel, data, symbol, to, user))

    def on(self, channel: p.Channel) -> list[Published]:
        return [item for item in self.items if item.channel is channel]


def quote(price: float, *, open_: float = 100.0, volume: int = 0) -> p.PriceData:
    """A well-formed quote at ``price`` with change against ``open_``."""
    change = round(price - open_, 2)
    return p.PriceData(
        price=price,
        change=change,
        change_pct=round(change / open_ * 100, 2),
        volume=volume,
        bid=round(price - 0.01, 2),
        ask=round(price + 0.01, 2),
    )
