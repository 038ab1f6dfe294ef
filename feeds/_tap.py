"""The price tap: in-process fan-in of price ticks to the feeds that react to them.

Theory of operation
-------------------
Alerts, signals and the portfolio all need every price the price feed publishes. The
price feed publishes through a :class:`PriceTap`, which is itself a
:class:`~feeds.Publisher`: it forwards every event to the real publisher (the bus),
unchanged and first, so backpressure from the bus still reaches the price feed; then
it offers each broadcast price (neither ``to`` nor ``user``) to every open :class:`PriceStream`.

A stream is a conflating mailbox: one slot per symbol, holding the latest quote not
yet received. An offer never blocks and never waits on a consumer: a newer quote for
a symbol replaces the pending one (counted in ``conflated``), so a consumer that
falls behind sees fewer, always-latest quotes, exactly like a slow WebSocket client.
Its memory is bounded by ``capacity`` symbols; a quote for a new symbol arriving at a
full stream is dropped and counted in ``dropped``. Consumers read with
:meth:`PriceStream.receive`, which returns every pending quote at once, in the order
their symbols first became pending.

Streams are opened per run of a consumer (``async with tap.open_stream()``), so a
consumer that crashes and is restarted by the supervisor simply opens a new one; a
stream that is closed takes no more offers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from protocol import Channel, EventData, PriceData

from ._market import MAX_UNIVERSE
from ._publisher import Publisher

#: Default bound of a stream, in distinct pending symbols: the largest universe.
DEFAULT_STREAM_CAPACITY: Final = MAX_UNIVERSE


@attrs.frozen(kw_only=True)
class PriceStreamStatistics:
    """A snapshot of one stream's counters."""

    #: Quotes offered to the stream.
    offered: int
    #: Quotes replaced by a newer one for the same symbol before they were received.
    conflated: int
    #: Quotes dropped because ``capacity`` symbols were already pending.
    dropped: int
    #: Symbols pending now.
    pending: int


class PriceStream:
    """One consumer's conflating mailbox of price quotes (see the module doc).

    Not created directly: use :meth:`PriceTap.open_stream`.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 symbol, got {capacity}")
        self._capacity = capacity
        self._pending: dict[str, PriceData] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._offered = 0
        self._conflated = 0
        self._dropped = 0
        self.closed = False

    def offer(self, symbol: str, quote: PriceData) -> None:
        """Hold ``quote`` as the latest for ``symbol``; never blocks (see the module doc)."""
        if self.closed:
            return
        self._offered += 1
        pending = self._pending
        if symbol in pending:
            self._conflated += 1
        elif len(pending) >= self._capacity:
            self._dropped += 1
            return
        pending[symbol] = quote
        self._lot.unpark_all()

    def receive_nowait(self) -> list[tuple[str, PriceData]]:
        """Every pending quote, oldest symbol first; empty if none. Never blocks."""
        if not self._pending:
            return []
        batch = list(self._pending.items())
        self._pending.clear()
        return batch

    async def receive(self) -> list[tuple[str, PriceData]]:
        """Wait for at least one pending quote, then return all of them.

        Cancel-safe: a cancelled ``receive`` leaves every pending quote pending.
        """
        if self._pending:
            await trio.lowlevel.checkpoint()
        while not self._pending:
            await self._lot.park()
        # Nothing awaits between the wake-up and the hand-over: no quote can be lost.
        return self.receive_nowait()

    def statistics(self) -> PriceStreamStatistics:
        return PriceStreamStatistics(
            offered=self._offered,
            conflated=self._conflated,
            dropped=self._dropped,
            pending=len(self._pending),
        )


class PriceTap:
    """A :class:`~feeds.Publisher` that forwards to ``publisher`` and copies prices to
    every open :class:`PriceStream` (see the module doc)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._streams: set[PriceStream] = set()

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Publish through the wrapped publisher (blocking as it blocks), then offer a
        broadcast price to every stream. Exceptions of the wrapped publisher propagate
        and the price then reaches no stream."""
        await self._publisher.publish(channel, data, symbol=symbol, to=to, user=user)
        if channel is Channel.PRICES and to is None and user is None and symbol is not None:
            assert isinstance(data, PriceData)
            for stream in self._streams:
                stream.offer(symbol, data)

    @asynccontextmanager
    async def open_stream(
        self, capacity: int = DEFAULT_STREAM_CAPACITY
    ) -> AsyncIterator[PriceStream]:
        """A stream of every price published from now until the block exits.

        ``capacity`` bounds the pending symbols (see the module doc).
        """
        stream = PriceStream(capacity)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            stream.closed = True
            self._streams.discard(stream)

    @property
    def stream_count(self) -> int:
        """Streams open now."""
        return len(self._streams)
