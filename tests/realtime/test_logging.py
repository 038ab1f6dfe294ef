"""The spec's debug line for each price broadcast: once per event, never per client."""

from __future__ import annotations

import logging

import pytest
import trio

from protocol import Channel, PriceData

from .helpers import TIMEOUT, connect, start_gateway

QUOTE = PriceData(
    price=185.5, change=2.3, change_pct=1.26, volume=45_000_000, bid=185.45, ask=185.55
)


async def _publish_to_two_clients(nursery: trio.Nursery, events: int) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "one") as one, connect(server, "two") as two:
            for client in (one, two):
                await client.request(
                    {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"]}, "subscribed"
                )
            # Offered to both subscribers before each publish returns.
            for _ in range(events):
                await server.publisher.publish(Channel.PRICES, QUOTE, symbol="AAPL")
            assert server.hub.offered == 2 * events


async def test_each_price_broadcast_is_logged_once_at_debug(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="realtime.hub")
    await _publish_to_two_clients(nursery, 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "realtime.hub"]
    assert lines == ["[WebSocket] Broadcasting price update: AAPL"] * 3


async def test_nothing_is_logged_per_broadcast_at_info(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await _publish_to_two_clients(nursery, 3)
    assert [r for r in caplog.records if r.name == "realtime.hub"] == []
