"""The price universe: --universe and --universe-file, the simulated market on it, a
replay within it, growing it from a feed hook or an embedding program."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from feeds import MAX_UNIVERSE, parse_universe
from protocol import Channel, PriceData
from realtime import Config, PriceUniverse, StartupError

from .helpers import TIMEOUT, connect, http_requests, start_gateway

KEY = "test-key-0123456789abcdef"


def quote(price: float) -> PriceData:
    return PriceData(price=price, change=0.0, change_pct=0.0, volume=0, bid=price, ask=price)


# --- the settings -------------------------------------------------------------------


def test_a_universe_is_tickers_in_order_separated_any_way() -> None:
    assert parse_universe("ORCL, AAPL,BRK.B") == ("ORCL", "AAPL", "BRK.B")
    text = "# my market\nORCL\n\nAAPL   # the big one\nSAP SAN\n"
    assert parse_universe(text) == ("ORCL", "AAPL", "SAP", "SAN")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "AAPL,aapl",
            "'aapl' is not a ticker: 1-10 of A-Z 0-9 . -, a letter first (tickers "
            "are upper case: AAPL)",
        ),
        ("AAPL\nMSFT\nAAPL", "x line 3: AAPL is listed twice (first on line 1)"),
        ("TOOLONGTICKER", "'TOOLONGTICKER' is not a ticker"),
        ("# nothing\n\n", "x: names no ticker"),
        ("1ABC", "'1ABC' is not a ticker"),
    ],
)
def test_a_bad_universe_says_where(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_universe(text, source="x")


def test_a_universe_is_bounded() -> None:
    with pytest.raises(ValueError, match=f"more than {MAX_UNIVERSE} tickers"):
        parse_universe(" ".join(f"S{n}" for n in range(MAX_UNIVERSE + 1)))


def test_config_reads_the_universe_from_a_flag_or_a_file(tmp_path: Path) -> None:
    assert Config(universe="ORCL,AAPL").price_universe() == ("ORCL", "AAPL")
    path = tmp_path / "universe.txt"
    path.write_text("ORCL\nAAPL\n")
    assert Config(universe_file=path).price_universe() == ("ORCL", "AAPL")
    assert Config().price_universe() is None


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (
            {"universe": "AAPL", "universe_file": Path("u.txt")},
            "--universe (REALTIME_UNIVERSE) and --universe-file (REALTIME_UNIVERSE_FILE): "
            "give the universe one way",
        ),
        (
            {"universe": "AAPL", "symbols": 100},
            "--symbols (REALTIME_SYMBOLS) is the size of the simulated universe, and "
            "--universe names it: give one",
        ),
        ({"universe": "AAPL,aapl"}, "--universe (REALTIME_UNIVERSE): 'aapl' is not a ticker"),
        (
            {"universe_file": Path("no-such-universe.txt")},
            "--universe-file (REALTIME_UNIVERSE_FILE): no such file: no-such-universe.txt",
        ),
        ({"feed": "not a hook"}, "or a feed hook 'module:callable', got 'not a hook'"),
    ],
)
def test_config_refuses_a_bad_universe(settings: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        Config(**settings)  # type: ignore[arg-type]


def test_config_names_the_line_of_a_bad_universe_file(tmp_path: Path) -> None:
    path = tmp_path / "universe.txt"
    path.write_text("ORCL\nsap\n")
    says = (
        f"--universe-file (REALTIME_UNIVERSE_FILE): {path} line 2: 'sap' is not a ticker: "
        "1-10 of A-Z 0-9 . -, a letter first (tickers are upper case: SAP)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(says)}$"):
        Config(universe_file=path)


# --- the simulated market and a replay on a given universe --------------------------


async def test_the_simulated_market_trades_the_given_universe(nursery: trio.Nursery) -> None:
    """Unknown tickers get generic prices (feeds.symbol_spec): the simulator still runs."""
    server = await start_gateway(nursery, universe="ORCL,AAPL,ZZZZ")
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            assert client.welcome["symbols"] == ["ORCL", "AAPL", "ZZZZ"]
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["ZZZZ"]}, "subscribed"
            )
            update = await client.next("price_update")
            assert update["symbol"] == "ZZZZ"
            assert update["data"]["price"] > 0
            reply = await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["MSFT"]}, "error"
            )
            assert reply["code"] == "unknown_symbol"


async def test_a_replay_within_the_universe_leaves_the_rest_to_others(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(
        nursery, feed="replay:sample", universe="AAPL,AMZN,GOOG,IBM,MSFT,ORCL", api_key=KEY
    )
    assert server.universe.symbols == ("AAPL", "AMZN", "GOOG", "IBM", "MSFT", "ORCL")
    # ORCL is nobody's in the gateway: the publish API may publish it, not AAPL.
    data = {"price": 20, "change": 0, "change_pct": 0, "volume": 0, "bid": 20, "ask": 20}
    body = {"channel": "prices", "symbol": "ORCL", "data": data}
    auth = [("Authorization", f"Bearer {KEY}")]
    with trio.fail_after(TIMEOUT):
        ((status, _, _),) = await http_requests(
            server.port, [("POST", "/api/publish", json.dumps(body).encode())], auth
        )
        assert status == 202
        ((status, _, answer),) = await http_requests(
            server.port,
            [("POST", "/api/publish", json.dumps({**body, "symbol": "AAPL"}).encode())],
            auth,
        )
    assert (status, json.loads(answer)["code"]) == (409, "forbidden")


async def test_a_replay_outside_the_universe_stops_the_start(nursery: trio.Nursery) -> None:
    with pytest.raises(StartupError) as error:
        await start_gateway(nursery, feed="replay:sample", universe="AAPL,MSFT")
    assert str(error.value).startswith("--feed (REALTIME_FEED): ")
    assert "has prices of AMZN, GOOG, IBM, not in --universe" in str(error.value)


# --- growing it ---------------------------------------------------------------------


async def test_embedding_refuses_prices_outside_the_universe_until_added(
    nursery: trio.Nursery,
) -> None:
    """``serve(Config(feeds=False))`` and a price of ORCL: refused, not accepted silently
    while subscribers would get unknown_symbol."""
    server = await start_gateway(nursery, feeds=False)
    with pytest.raises(ValueError, match="ORCL is not in the price universe"):
        await server.publisher.publish(Channel.PRICES, quote(10.0), symbol="ORCL")
    assert server.hub.published == 0
    assert server.universe.add(["ORCL", "AAPL"]) == ("ORCL",)  # AAPL was there
    assert server.universe.add(["ORCL"]) == ()
    with pytest.raises(ValueError, match="'orcl' is not a ticker"):
        server.universe.add(["SAP", "orcl"])
    assert "SAP" not in server.universe  # all or nothing
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            assert client.welcome["symbols"][-1] == "ORCL"
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["ORCL"]}, "subscribed"
            )
            await server.publisher.publish(Channel.PRICES, quote(10.0), symbol="ORCL")
            assert (await client.next("price_update"))["data"]["price"] == 10.0


async def test_a_feed_hook_adds_symbols_and_publishes_them(nursery: trio.Nursery) -> None:
    server = await start_gateway(
        nursery, feed="tests.realtime.feed_hooks:orcl", universe="AAPL", api_key=KEY
    )
    with trio.fail_after(TIMEOUT):
        async with connect(server, "early") as client:
            # An every-symbol subscriber gets the new symbol's prices without asking.
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            assert (await client.next("price_update"))["symbol"] == "ORCL"
        assert server.universe.symbols == ("AAPL", "ORCL")
        async with connect(server, "late") as client:
            assert client.welcome["symbols"] == ["AAPL", "ORCL"]
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["ORCL"]}, "subscribed"
            )
            assert (await client.next("price_update"))["data"]["price"] >= 150.0
        # The alert rules API knows the new symbol too.
        rule = {"id": "orcl-up", "symbol": "ORCL", "type": "price_above", "threshold": 1000}
        ((status, _, _),) = await http_requests(
            server.port,
            [("POST", "/api/alert-rules", json.dumps(rule).encode())],
            [("Authorization", f"Bearer {KEY}")],
        )
        assert status == 201


async def test_a_hook_publishing_outside_its_universe_fails_loudly(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, feed="tests.realtime.feed_hooks:outside")
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.request(
                {
                    "type": "subscribe",
                    "channel": "notifications",
                    "since": 0,
                    "epoch": client.welcome["epoch"],
                },
                "subscribed",
            )
            while True:
                note = await client.next("notification")
                if "went down" in note["data"]["message"]:
                    break
    assert note["data"]["type"] == "error"
    assert "ValueError: NOPE is not in the price universe" in note["data"]["message"]


@pytest.mark.parametrize(
    ("feed", "says"),
    [
        ("no_such_module_here:feed", "cannot import no_such_module_here: No module named"),
        ("tests.realtime.feed_hooks:missing", "tests.realtime.feed_hooks has no missing"),
        ("tests.realtime.feed_hooks:NOT_A_FEED", "is a int, not a function"),
    ],
)
async def test_a_hook_that_does_not_load_stops_the_start(
    nursery: trio.Nursery, feed: str, says: str
) -> None:
    with pytest.raises(StartupError) as error:
        await start_gateway(nursery, feed=feed)
    assert str(error.value).startswith("--feed (REALTIME_FEED): ")
    assert says in str(error.value)


def test_a_clusters_universe_is_fixed() -> None:
    universe = PriceUniverse(symbols=("AAPL", "ORCL"), fixed="a cluster's universe is fixed")
    assert universe.add(["ORCL"]) == ()  # nothing new: fine
    with pytest.raises(ValueError, match=r"^cannot add SAP: a cluster's universe is fixed$"):
        universe.add(["SAP", "AAPL"])
    assert list(universe) == ["AAPL", "ORCL"]
    with pytest.raises(TypeError, match=r"not one string: add\(\[symbol\]\)"):
        universe.add("SAP")
