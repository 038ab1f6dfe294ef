"""The price tap: forwards everything, copies broadcast prices to bounded, conflating streams."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import protocol as p
from feeds import PriceTap

from .doubles import Recorder, quote


async def test_forwards_every_event_and_copies_broadcast_prices() -> None:
    recorder = Recorder()
    tap = PriceTap(recorder)
    note = p.NotificationData(id="n", message="hi", type=p.NotificationType.INFO)
    async with tap.open_stream() as stream:
        assert tap.stream_count == 1
        await tap.publish(p.Channel.PRICES, quote(101), symbol="AAPL")
        await tap.publish(p.Channel.PRICES, quote(50), symbol="MSFT")
        await tap.publish(p.Channel.PRICES, quote(102), symbol="AAPL", to="one-client")
        await tap.publish(p.Channel.NOTIFICATIONS, note)
        assert [item.channel for item in recorder.items] == [p.Channel.PRICES] * 3 + [
            p.Channel.NOTIFICATIONS
        ]
        assert recorder.items[2].to == "one-client"
        # The targeted price is not a market price: only the broadcast ones are copied.
        assert await stream.receive() == [("AAPL", quote(101)), ("MSFT", quote(50))]
        assert stream.receive_nowait() == []
    assert tap.stream_count == 0
    assert stream.closed


async def test_conflates_per_symbol_keeping_the_latest() -> None:
    tap = PriceTap(Recorder())
    async with tap.open_stream() as stream:
        for price in (101, 102, 103):
            await tap.publish(p.Channel.PRICES, quote(price), symbol="AAPL")
        await tap.publish(p.Channel.PRICES, quote(50), symbol="MSFT")
        assert stream.receive_nowait() == [("AAPL", quote(103)), ("MSFT", quote(50))]
        stats = stream.statistics()
        assert (stats.offered, stats.conflated, stats.dropped, stats.pending) == (4, 2, 0, 0)


async def test_capacity_bounds_pending_symbols() -> None:
    tap = PriceTap(Recorder())
    async with tap.open_stream(capacity=2) as stream:
        for symbol in ("A", "B", "C"):
            await tap.publish(p.Channel.PRICES, quote(10), symbol=symbol)
        await tap.publish(p.Channel.PRICES, quote(11), symbol="B")  # pending: replaces
        assert stream.statistics().dropped == 1
        assert stream.receive_nowait() == [("A", quote(10)), ("B", quote(11))]
        await tap.publish(p.Channel.PRICES, quote(12), symbol="C")  # room again
        assert stream.receive_nowait() == [("C", quote(12))]
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        async with tap.open_stream(capacity=0):
            pass  # pragma: no cover


async def test_receive_waits_and_is_cancel_safe(autojump_clock: trio.testing.MockClock) -> None:
    tap = PriceTap(Recorder())
    async with tap.open_stream() as stream:
        with trio.move_on_after(1) as scope:
            await stream.receive()
        assert scope.cancelled_caught
        got: list[object] = []

        async def consumer() -> None:
            got.extend(await stream.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.sleep(1)
            await tap.publish(p.Channel.PRICES, quote(99), symbol="KO")
        assert got == [("KO", quote(99))]


async def test_publisher_errors_propagate_and_reach_no_stream() -> None:
    class Broken:
        async def publish(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("bus gone")

    tap = PriceTap(Broken())
    async with tap.open_stream() as stream:
        with pytest.raises(RuntimeError, match="bus gone"):
            await tap.publish(p.Channel.PRICES, quote(1), symbol="A")
        assert stream.receive_nowait() == []
