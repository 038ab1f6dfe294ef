"""The portfolio: exact to the cent, published at most once a second and only on change."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol as p
from feeds import (
    DEMO_USER,
    MAX_POSITIONS,
    Holding,
    Portfolio,
    PortfolioFeed,
    PortfolioSpec,
    PriceFeed,
    PriceFeedConfig,
    PriceTap,
    demo_portfolio,
    load_portfolio,
)

from .doubles import Recorder, quote


def _d(value: float) -> Decimal:
    return Decimal(repr(value))


def test_arithmetic_is_exact_to_the_cent() -> None:
    spec = PortfolioSpec(
        cash="1000.10",
        positions=[
            Holding(symbol="AAPL", quantity=3, avg_cost="0.10"),
            Holding(symbol="MSFT", quantity="0.5", avg_cost="100.005"),
            Holding(symbol="KO", quantity=7, avg_cost=62),
        ],
    )
    portfolio = Portfolio(spec)
    assert portfolio.observe("AAPL", quote(0.2, open_=0.1))
    assert portfolio.observe("MSFT", quote(101.01, open_=100.0))
    assert not portfolio.observe("NVDA", quote(5.0))  # not held: ignored
    data = portfolio.snapshot()
    aapl, msft, ko = data.positions
    # 3 x 0.2 is 0.6000000000000001 in floats; here it is 0.60.
    assert (aapl.market_value, aapl.unrealized_pnl, aapl.unrealized_pnl_pct) == (0.6, 0.3, 100.0)
    # 0.5 x 101.01 = 50.505 rounds half-up to 50.51; basis 0.5 x 100.005 = 50.0025 -> 50.00.
    assert (msft.market_value, msft.unrealized_pnl, msft.unrealized_pnl_pct) == (50.51, 0.51, 1.02)
    # No quote yet: valued at cost.
    assert (ko.price, ko.market_value, ko.unrealized_pnl) == (62.0, 434.0, 0.0)
    assert data.cash == 1000.1
    assert data.total_value == 1485.21
    # Day change: 3 x 0.10 + 0.5 x 1.01 = 0.805 -> 0.81; over the value at the open.
    assert data.day_change == 0.81
    assert data.day_change_pct == float(round(Decimal("0.81") / Decimal("1484.40") * 100, 2))
    # The wire sums exactly, in cents.
    assert _d(data.total_value) == _d(data.cash) + sum(_d(x.market_value) for x in data.positions)
    for x in data.positions:
        basis = _d(x.market_value) - _d(x.unrealized_pnl)
        assert basis == (_d(x.quantity) * _d(x.avg_cost)).quantize(Decimal("0.01"), "ROUND_HALF_UP")


def test_many_small_prices_do_not_drift() -> None:
    holdings = [Holding(symbol=f"S{i}", quantity=1, avg_cost="0.01") for i in range(300)]
    portfolio = Portfolio(PortfolioSpec(cash=0, positions=holdings))
    for i in range(300):
        portfolio.observe(f"S{i}", quote(0.1, open_=0.1))
    data = portfolio.snapshot()
    assert data.total_value == 30.0  # sum(0.1 for 300) is 30.000000000000156 in floats
    assert data.day_change == 0.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Holding(symbol="AAPL", quantity=0, avg_cost=1), "quantity must be greater than 0"),
        (lambda: Holding(symbol="AAPL", quantity=1, avg_cost=-1), "avg_cost must be at least 0"),
        (lambda: Holding(symbol="AAPL", quantity="x", avg_cost=1), "quantity must be a number"),
        (lambda: Holding(symbol="AAPL", quantity=True, avg_cost=1), "quantity must be a number"),
        (lambda: Holding(symbol="AAPL", quantity=1, avg_cost="nan"), "avg_cost must be a finite"),
        (lambda: Holding(symbol="AAPL", quantity=1e13, avg_cost=1), "quantity must be a finite"),
        (lambda: Holding(symbol="aapl", quantity=1, avg_cost=1), "symbol must be a ticker"),
        (lambda: PortfolioSpec(cash=-5, positions=[]), "cash must be at least 0"),
        (
            lambda: PortfolioSpec(
                cash=0, positions=[Holding(symbol="A", quantity=1, avg_cost=1)] * 2
            ),
            "two positions in A",
        ),
        (
            lambda: PortfolioSpec(
                cash=0,
                positions=[
                    Holding(symbol=f"S{i}", quantity=1, avg_cost=1)
                    for i in range(MAX_POSITIONS + 1)
                ],
            ),
            f"at most {MAX_POSITIONS} positions",
        ),
    ],
)
def test_bad_portfolios_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_portfolio_file(tmp_path: Path) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(
        'cash = "25000.00"\n\n[[positions]]\nsymbol = "AAPL"\nquantity = 50\navg_cost = 172.35\n'
        '\n[[positions]]\nsymbol = "BRK.B"\nquantity = "0.25"\navg_cost = "401.125"\n'
    )
    spec = load_portfolio(path)
    assert spec.cash == Decimal("25000.00")
    assert spec.positions == (
        Holding(symbol="AAPL", quantity=50, avg_cost=Decimal("172.35")),
        Holding(symbol="BRK.B", quantity=Decimal("0.25"), avg_cost=Decimal("401.125")),
    )


POSITION = '[[positions]]\nsymbol = "AAPL"\nquantity = 1\navg_cost = 1\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cash = ", "not valid TOML"),
        ("money = 1", "unknown field 'money'"),
        ("positions = 1", "'positions' must be an array of tables"),
        (POSITION + "note = 'x'\n", r"positions\[0\]: unknown field 'note'"),
        ('[[positions]]\nsymbol = "AAPL"\nquantity = 1\n', r"positions\[0\]: missing .*avg_cost"),
        (POSITION.replace("quantity = 1", "quantity = -1"), r"positions\[0\]: quantity must be"),
        ("cash = true\n" + POSITION, "cash must be a number"),
        (POSITION + POSITION, "two positions in AAPL"),
    ],
)
def test_bad_portfolio_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        load_portfolio(path)
    assert str(raised.value).startswith(str(path))


def test_demo_portfolio() -> None:
    spec = demo_portfolio({"AAPL": 190.0, "MSFT": 420.0})
    assert spec.cash == Decimal("25000.00")
    assert spec.positions == (
        Holding(symbol="AAPL", quantity=50, avg_cost=Decimal("174.80")),
        Holding(symbol="MSFT", quantity=20, avg_cost=Decimal("432.60")),
    )


async def test_feed_publishes_at_most_once_a_second_and_only_on_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    prices = PriceFeed(PriceFeedConfig(symbols=("AAPL", "MSFT", "KO"), tick_rate=10.0, seed=3))
    recorder = Recorder()
    tap = PriceTap(recorder)
    spec = PortfolioSpec(
        cash=1000,
        positions=[
            Holding(symbol="AAPL", quantity=10, avg_cost=150),
            Holding(symbol="MSFT", quantity=2, avg_cost=400),
        ],
    )
    feed = PortfolioFeed(tap, spec)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, recorder)
        await nursery.start(prices.run, tap)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    updates = recorder.on(p.Channel.PORTFOLIO)
    times = [item.time - start for item in updates]
    assert times[0] == pytest.approx(0.0)  # the first prices are a change: at once
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert 25 <= len(updates) <= 31
    snapshots = [item.data for item in updates]
    assert all(a != b for a, b in itertools.pairwise(snapshots))
    # The demo's portfolio is the demo user's: per-user data, to that user alone.
    assert {(item.user, item.to) for item in updates} == {(DEMO_USER, None)}
    # The last update values the portfolio at the last prices published before it.
    last = updates[-1]
    latest: dict[str, p.PriceData] = {}
    for item in recorder.items:
        if item is last:
            break
        if item.channel is p.Channel.PRICES and item.symbol is not None:
            assert isinstance(item.data, p.PriceData)
            latest[item.symbol] = item.data
    expected = Portfolio(spec)
    for symbol, q in latest.items():
        expected.observe(symbol, q)
    assert last.data == expected.snapshot()


async def test_feed_is_silent_while_nothing_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    tap = PriceTap(recorder)
    spec = PortfolioSpec(cash=0, positions=[Holding(symbol="A", quantity=1, avg_cost=1)])
    feed = PortfolioFeed(tap, spec, interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, recorder)
        for _ in range(10):
            await tap.publish(p.Channel.PRICES, quote(2.0), symbol="A")
            await tap.publish(p.Channel.PRICES, quote(5.0), symbol="OTHER")
            await trio.sleep(2)
        await tap.publish(p.Channel.PRICES, quote(2.5), symbol="A")
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    values = [item.data for item in recorder.on(p.Channel.PORTFOLIO)]
    assert [v.total_value for v in values if isinstance(v, p.PortfolioData)] == [2.0, 2.5]


def test_interval_must_be_positive() -> None:
    spec = PortfolioSpec(cash=0, positions=[])
    with pytest.raises(ValueError, match="portfolio interval must be greater than 0"):
        PortfolioFeed(PriceTap(Recorder()), spec, interval=-1)
