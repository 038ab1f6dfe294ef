"""``realtime listen`` against the real gateway: NDJSON, the prices table, the log."""

from __future__ import annotations

import io
import json

import trio

from protocol import Channel, NotificationData, NotificationType
from realtime._cli import _parser
from realtime.client._viewer import listen
from realtime.client._viewer_options import ListenOptions, listen_options

from ..realtime.helpers import start_gateway

TIMEOUT = 10.0


async def test_json_prints_one_message_per_line(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    out, err = io.StringIO(), io.StringIO()
    options = ListenOptions(
        url=f"ws://127.0.0.1:{server.port}", symbols=("AAPL", "MSFT"), json=True, count=5
    )
    with trio.fail_after(TIMEOUT):
        await listen(options, out, err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 5
    assert {line["type"] for line in lines} == {"price_update"}
    assert {line["symbol"] for line in lines} <= {"AAPL", "MSFT"}
    assert "subscribed to prices" in err.getvalue()


async def test_prices_table_and_notifications_log(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    url = f"ws://127.0.0.1:{server.port}"
    out = io.StringIO()
    with trio.fail_after(TIMEOUT):
        await listen(ListenOptions(url=url, symbols=("NVDA",), count=3), out, io.StringIO())
    assert "NVDA" in out.getvalue()
    assert "chg %" in out.getvalue()

    out = io.StringIO()
    options = ListenOptions(url=url, channel=Channel.NOTIFICATIONS, count=1)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as inner:
            inner.start_soon(listen, options, out, io.StringIO())
            while server.hub.statistics().channel_subscriptions["notifications"] == 0:
                await trio.sleep(0.01)
            await server.bus.publish(
                Channel.NOTIFICATIONS,
                NotificationData(id="x", message="Market opens", type=NotificationType.INFO),
            )
    assert "Market opens" in out.getvalue()


def test_cli_flags() -> None:
    args = _parser().parse_args(
        ["listen", "--channel", "prices", "--symbols", "AAPL, MSFT", "--json", "--count", "2"]
    )
    options = listen_options(args)
    assert (options.channel, options.symbols, options.json, options.count) == (
        Channel.PRICES,
        ("AAPL", "MSFT"),
        True,
        2,
    )
    assert options.url == "ws://127.0.0.1:8000"
    assert options.client_id.startswith("listen-")
