"""The live feeds in the real gateway: all five channels, replay of the shipped sample,
notifications for feed starts, crashes and the drain, and the in-process publish API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from feeds import SAMPLE_REPLAY, AlertFeed, AlertRule, PriceTap, ReplayFeed, load_quotes
from protocol import AlertData, Channel, EventData, NotificationData, PriceData, Severity
from realtime import Config, serve
from realtime._supervisor import supervise

from .helpers import TIMEOUT, Client, close_of, connect, start_gateway

CHANNELS = ("prices", "alerts", "signals", "portfolio", "notifications")
EVENT_TYPES = (
    "price_update",
    "alert_triggered",
    "trading_signal",
    "portfolio_update",
    "notification",
)


async def _subscribe_all(client: Client) -> None:
    for channel in CHANNELS:
        request: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if channel == "notifications":  # what was announced before we came: from history
            request |= {"since": 0, "epoch": client.welcome["epoch"]}
        await client.request(request, "subscribed")


async def test_all_five_channels_are_alive_within_seconds(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, signal_interval=0.5)
    seen: dict[str, dict[str, Any]] = {}
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await _subscribe_all(client)
            while not set(seen) >= set(EVENT_TYPES):
                message = await client.receive()
                seen.setdefault(message["type"], message)
    assert seen["notification"]["data"]["message"].startswith("Feed ")
    assert seen["notification"]["data"]["message"].endswith(" started")
    portfolio = seen["portfolio_update"]["data"]
    assert [p["symbol"] for p in portfolio["positions"]] == ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"]
    assert portfolio["cash"] == 25000.0
    assert 0 <= seen["trading_signal"]["data"]["confidence"] <= 1


async def test_replay_of_the_shipped_sample_reaches_a_client_in_order(
    nursery: trio.Nursery,
) -> None:
    rows = load_quotes(SAMPLE_REPLAY)
    # Three years of monthly prices in ~1.6 s a pass.
    server = await start_gateway(
        nursery, feed=f"replay:{SAMPLE_REPLAY}", replay_speed=6e7, signal_interval=0.2
    )
    expected = [(row.symbol, row.price) for row in rows]
    received: list[tuple[str, float]] = []
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            assert client.welcome["symbols"] == ["AAPL", "AMZN", "GOOG", "IBM", "MSFT"]
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            # We join late, so the first pass is partial; the next one must arrive whole,
            # every row in file order (the replay starts over after each pass).
            while received[-len(expected) :] != expected:
                message = await client.next("price_update")
                received.append((message["symbol"], message["data"]["price"]))
    replay = server.feeds.prices
    assert isinstance(replay, ReplayFeed)
    assert replay.published >= len(rows)


async def test_the_drain_is_announced_before_the_1001_close(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.request({"type": "subscribe", "channel": "notifications"}, "subscribed")
            server.shutdown()
            note = await client.next("notification")
            assert note["data"]["type"] == "warning"
            assert note["data"]["message"].startswith("Server draining")
            with pytest.raises(ConnectionClosed) as closed:
                await client.next("never")
            assert close_of(closed.value)[0] == 1001


async def test_python_publish_api_in_the_same_process(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    alert = AlertData(
        id="py-1", symbol="AAPL", type="custom", message="From Python", severity=Severity.INFO
    )
    with trio.fail_after(TIMEOUT):
        async with connect(server, "me") as client:
            await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            await server.publisher.publish(Channel.ALERTS, alert, to="me")
            assert (await client.next("alert_triggered"))["data"]["message"] == "From Python"


class FlakyBus:
    """Fails the first publish of an alert, as a broken bus would; records the rest."""

    def __init__(self) -> None:
        self.published: list[tuple[Channel, EventData]] = []
        self.failures = 0

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        if channel is Channel.ALERTS and self.failures == 0:
            self.failures += 1
            raise RuntimeError("bus hiccup")
        self.published.append((channel, data))


async def test_a_crashed_feed_is_restarted_and_announced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = FlakyBus()
    tap = PriceTap(bus)
    rule = AlertRule(id="r", symbol="A", type="price_above", threshold=10)
    alerts = AlertFeed(tap, [rule])

    def price(value: float) -> PriceData:
        return PriceData(price=value, change=0, change_pct=0, volume=0, bid=value, ask=value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervise, "alerts", alerts.run, bus)
        await trio.sleep(0.1)
        for value in (9, 11):  # 11 fires; its publish fails and the feed crashes
            await tap.publish(Channel.PRICES, price(value), symbol="A")
            await trio.sleep(0.1)
        await trio.sleep(5)  # the supervisor waits 1 s, then restarts the feed
        assert tap.stream_count == 1
        for value in (12, 9, 11):  # 12: the same crossing, no alert; 11: a new one
            await tap.publish(Channel.PRICES, price(value), symbol="A")
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    notes = [d.message for c, d in bus.published if isinstance(d, NotificationData)]
    assert notes == [
        "Feed alerts went down (RuntimeError: bus hiccup); restarting in 1s",
        "Feed alerts is back up",
    ]
    fired = [d.id for c, d in bus.published if isinstance(d, AlertData)]
    assert fired == ["r-2"]  # r-1 was lost with the crash; the rule's state survived


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"feed": "random"},
            "--feed (REALTIME_FEED) must be 'simulated', 'replay:sample', 'replay:FILE' or a "
            "feed hook 'module:callable'",
        ),
        ({"feed": "replay:"}, "must be 'simulated', 'replay:sample', 'replay:FILE' or a feed"),
        ({"feed": "replay:/no/such.csv"}, "--feed (REALTIME_FEED): no such file"),
        ({"alerts": Path("/no/such.toml")}, "--alerts (REALTIME_ALERTS): no such file"),
        ({"portfolio": Path("/no/such.toml")}, "--portfolio (REALTIME_PORTFOLIO): no such file"),
        ({"replay_speed": 0.0}, "--replay-speed (REALTIME_REPLAY_SPEED) must be > 0"),
        ({"signal_interval": 0.0}, "--signal-interval (REALTIME_SIGNAL_INTERVAL) must be greater"),
        ({"api_key": "short"}, "--api-key (REALTIME_API_KEY) must be at least 16 printable"),
        ({"api_key": "has a space in it, long"}, "without spaces"),
        ({"publish_max_body": 0}, "--publish-max-body (REALTIME_PUBLISH_MAX_BODY) must be"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config(**settings)


def test_api_key_from_the_environment_is_kept_out_of_repr() -> None:
    config = Config.from_env({"REALTIME_API_KEY": "k" * 20})
    assert config.api_key == "k" * 20
    assert "k" * 20 not in repr(config)


async def test_files_with_symbols_outside_the_universe_stop_the_start(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.toml"
    alerts.write_text('[[rules]]\nid = "r"\nsymbol = "ZZZZ"\ntype = "price_above"\nthreshold = 1\n')
    with pytest.raises(ValueError, match=r"alerts.toml: ZZZZ is not a symbol of the price feed"):
        await serve(Config(port=0, alerts=alerts))
    portfolio = tmp_path / "portfolio.toml"
    portfolio.write_text('[[positions]]\nsymbol = "NVDA"\nquantity = 1\navg_cost = 1\n')
    replay = f"replay:{SAMPLE_REPLAY}"
    with pytest.raises(ValueError, match=r"portfolio.toml: NVDA is not a symbol"):
        await serve(Config(port=0, portfolio=portfolio, feed=replay))


async def test_user_files_drive_the_feeds(nursery: trio.Nursery, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.toml"
    alerts.write_text(
        '[[rules]]\nid = "any-move"\nsymbol = "AAPL"\ntype = "percent_move"\nthreshold = 0.01\n'
    )
    portfolio = tmp_path / "portfolio.toml"
    portfolio.write_text('cash = 100\n[[positions]]\nsymbol = "KO"\nquantity = 3\navg_cost = 60\n')
    server = await start_gateway(nursery, alerts=alerts, portfolio=portfolio)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            # From the start of history, and without skipping what comes between the
            # acks: the rule may fire, and the portfolio be published, at any moment.
            epoch = client.welcome["epoch"]
            for channel in ("alerts", "portfolio"):
                await client.send(
                    {"type": "subscribe", "channel": channel, "since": 0, "epoch": epoch}
                )
            wanted = {"alert_triggered", "portfolio_update"}
            received = await client.collect_until(
                lambda kept: wanted <= {m["type"] for m in kept},
                lambda m: m["type"] in wanted,
            )
            alert = next(m for m in received if m["type"] == "alert_triggered")
            assert alert["data"]["id"].startswith("any-move-")
            update = next(m for m in received if m["type"] == "portfolio_update")
            assert [p["symbol"] for p in update["data"]["positions"]] == ["KO"]
            assert update["data"]["cash"] == 100.0


@pytest.mark.parametrize(
    ("derived", "started"),
    [
        (True, {"alerts", "signals", "portfolio", "prices"}),
        (False, {"prices"}),
    ],
)
async def test_derived_feeds_can_be_left_out(
    nursery: trio.Nursery, derived: bool, started: set[str]
) -> None:
    server = await start_gateway(nursery, derived_feeds=derived)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            await client.next("price_update")
            await client.request(
                {
                    "type": "subscribe",
                    "channel": "notifications",
                    "since": 0,
                    "epoch": client.welcome["epoch"],
                },
                "subscribed",
            )
            # The replay of history: every start announced so far, at once.
            replayed = await client.queued(lambda m: m["type"] == "notification")
    announced = {m["data"]["message"] for m in replayed}
    assert announced == {f"Feed {name} started" for name in started}
    assert bool(server.feeds.tap._streams) is derived


@pytest.mark.parametrize("demo_events", [True, False])
async def test_demo_events_can_be_turned_off(
    nursery: trio.Nursery, socket_clock: trio.testing.MockClock, demo_events: bool
) -> None:
    # Virtual time: the first demo event is due 3 s after the start, and a minute of
    # feeds passes in moments whenever the gateway is idle.
    server = await start_gateway(nursery, tick_rate=1.0, demo_events=demo_events)
    with trio.fail_after(120):  # virtual seconds, as every deadline here
        async with connect(server) as client:
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            await client.request(
                {
                    "type": "subscribe",
                    "channel": "notifications",
                    "since": 0,
                    "epoch": client.welcome["epoch"],
                },
                "subscribed",
            )
            start = trio.current_time()
            notes: list[dict[str, Any]] = []
            # A virtual minute of the gateway's life, read as it comes.
            while trio.current_time() - start < 60:
                message = await client.next("notification", "price_update")
                if message["type"] == "notification":
                    notes.append(message["data"])
    messages = [note["message"] for note in notes]
    demo = [note for note in notes if not note["message"].startswith("Feed ")]
    if demo_events:
        assert "Feed demo-events started" in messages
        assert {note["type"] for note in demo} >= {"success", "info", "warning"}
        assert demo[0]["message"].startswith("Model training completed: ")
    else:
        assert "Feed demo-events started" not in messages
        assert demo == []
