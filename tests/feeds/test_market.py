"""The market model: universe, determinism, quote invariants, and GBM statistics."""

from __future__ import annotations

import itertools
import math
import re
import statistics
from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as p
from feeds._market import (
    MAX_DT,
    MAX_PRICE,
    MAX_UNIVERSE,
    TRADING_SECONDS_PER_DAY,
    TRADING_SECONDS_PER_YEAR,
    WELL_KNOWN,
    Market,
    SymbolSpec,
    symbol_spec,
    universe,
)

SYMBOL_RE = re.compile(p.SYMBOL_PATTERN)


def spec(
    symbol: str = "TEST",
    open: float = 1000.0,
    volatility: float = 0.3,
    spread_bps: float = 2.0,
    daily_volume: int = 1_000_000,
) -> SymbolSpec:
    return SymbolSpec(
        symbol=symbol,
        open=open,
        volatility=volatility,
        spread_bps=spread_bps,
        daily_volume=daily_volume,
    )


def is_cents(x: float) -> bool:
    return round(x, 2) == x


def check_quote(q: p.PriceData, open_: float) -> None:
    assert q.price > 0
    assert 0 < q.bid <= q.price <= q.ask
    assert q.bid < q.ask
    assert all(is_cents(x) for x in (q.price, q.bid, q.ask, q.change))
    assert q.change == round(q.price - open_, 2)
    assert q.change_pct == round(q.change_pct, 2)
    assert q.change_pct == pytest.approx((q.price - open_) / open_ * 100, abs=0.005 + 1e-9)
    assert isinstance(q.volume, int)
    assert q.volume >= 0


# --- universe -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 16, 17, 250, 10_500])
def test_universe_size_unique_and_valid(n: int) -> None:
    symbols = universe(n)
    assert len(symbols) == n
    assert len(set(symbols)) == n
    assert all(SYMBOL_RE.fullmatch(s) for s in symbols)
    assert symbols == universe(n + 1)[:n]


def test_universe_puts_well_known_first() -> None:
    known = tuple(s.symbol for s in WELL_KNOWN)
    assert len(known) == 16
    assert known[:7] == ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA")
    assert universe(16) == known
    assert universe(3) == known[:3]
    assert universe(19) == (*known, "SYN0001", "SYN0002", "SYN0003")


def test_universe_at_its_limit() -> None:
    symbols = universe(MAX_UNIVERSE)
    assert len(set(symbols)) == MAX_UNIVERSE
    assert all(SYMBOL_RE.fullmatch(s) for s in symbols[-3:])


@pytest.mark.parametrize(
    ("n", "error"),
    [(-1, ValueError), (MAX_UNIVERSE + 1, ValueError), (1.5, TypeError), (True, TypeError)],
)
def test_universe_rejects_bad_sizes(n: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="universe size"):
        universe(n)  # type: ignore[arg-type]  # deliberately wrong type


def test_symbol_spec_is_stable_and_plausible() -> None:
    assert symbol_spec("AAPL") is WELL_KNOWN[0]
    for symbol in universe(200)[16:]:
        s = symbol_spec(symbol)
        assert s == symbol_spec(symbol)
        assert 5 <= s.open <= 500
        assert 0.15 <= s.volatility <= 0.6
        assert 2 <= s.spread_bps <= 10
    assert symbol_spec("SYN0001") != symbol_spec("SYN0002")


def test_symbol_spec_rejects_invalid_ticker() -> None:
    with pytest.raises(ValueError, match="invalid ticker"):
        symbol_spec("aapl")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symbol": "bad"}, "invalid ticker"),
        ({"open": 0.0}, "open"),
        ({"open": math.inf}, "open"),
        ({"volatility": -0.1}, "volatility"),
        ({"volatility": math.nan}, "volatility"),
        ({"spread_bps": 101}, "spread_bps"),
        ({"daily_volume": -1}, "daily_volume"),
    ],
)
def test_symbol_spec_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spec(**kwargs)  # type: ignore[arg-type]  # values of mixed types by design


# --- market -------------------------------------------------------------------


def run(market: Market, steps: int, dt: float = 1.0) -> list[tuple[str, p.PriceData]]:
    out = []
    for i in range(steps):
        symbol = market.symbols[i % len(market.symbols)]
        out.append((symbol, market.step(symbol, dt)))
    return out


def test_same_seed_same_prices_other_seed_other_prices() -> None:
    symbols = universe(30)
    a = run(Market(symbols, seed=7), 600)
    assert a == run(Market(symbols, seed=7), 600)
    assert a != run(Market(symbols, seed=8), 600)


def test_unknown_symbol_and_duplicates() -> None:
    market = Market(["AAPL"], seed=1)
    with pytest.raises(KeyError):
        market.step("MSFT", 1.0)
    with pytest.raises(KeyError):
        market.last("MSFT")
    with pytest.raises(ValueError, match="duplicate symbol 'AAPL'"):
        Market(["AAPL", "MSFT", "AAPL"])
    with pytest.raises(ValueError, match="invalid ticker"):
        Market(["AAPL", "not a ticker"])


@pytest.mark.parametrize("dt", [-1.0, math.nan, math.inf, MAX_DT * 2])
def test_step_rejects_bad_dt(dt: float) -> None:
    with pytest.raises(ValueError, match="dt must be"):
        Market(["AAPL"], seed=1).step("AAPL", dt)


@pytest.mark.parametrize("time_scale", [0.0, -1.0, math.nan, math.inf, 1e5])
def test_market_rejects_bad_time_scale(time_scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        Market(["AAPL"], time_scale=time_scale)


def test_accessors_and_custom_specs() -> None:
    custom = spec("ZZZ", open=12.345)
    market = Market(["AAPL", custom], seed=1, time_scale=30.0)
    assert market.symbols == ("AAPL", "ZZZ")
    assert market.time_scale == 30.0
    assert market.spec("ZZZ") is custom
    assert market.spec("ZZZ").open == 12.35  # rounded to cents
    assert market.spec("AAPL") == symbol_spec("AAPL")


def test_the_first_quote_is_the_open() -> None:
    market = Market(universe(20), seed=3)
    for symbol in market.symbols:
        open_ = market.spec(symbol).open
        q = market.last(symbol)
        assert (q.price, q.change, q.change_pct, q.volume) == (open_, 0.0, 0.0, 0)
        check_quote(q, open_)
        # dt=0 requotes without moving the price or the volume.
        assert market.step(symbol, 0.0) == q


def test_last_is_the_latest_step() -> None:
    market = Market(["AAPL", "MSFT"], seed=3)
    q = market.step("AAPL", 1.0)
    assert market.last("AAPL") == q
    assert market.last("MSFT").change == 0


def test_invariants_over_a_long_run() -> None:
    market = Market(universe(40), seed=11)
    volume = {s: 0 for s in market.symbols}
    moved = set()
    for symbol, q in run(market, 40 * 250):
        check_quote(q, market.spec(symbol).open)
        assert q.volume >= volume[symbol]
        volume[symbol] = q.volume
        if q.change:
            moved.add(symbol)
    # 250 simulated minutes each: every symbol moved and traded.
    assert moved == set(market.symbols)
    assert all(v > 0 for v in volume.values())


def test_zero_volatility_is_flat() -> None:
    market = Market([spec(volatility=0.0)], seed=1)
    assert all(q.price == 1000.0 and q.change == 0 for _, q in run(market, 100))


def test_sub_cent_spread_still_quotes_a_cent_apart() -> None:
    market = Market([spec(open=3.0, spread_bps=0.0)], seed=1)
    for _, q in run(market, 200):
        assert q.ask == round(q.bid + 0.01, 2)
        check_quote(q, 3.0)


def test_guards_keep_extreme_moves_well_formed() -> None:
    market = Market([spec(open=0.02, volatility=10.0, spread_bps=100)], seed=5, time_scale=1e4)
    for _, q in run(market, 300, dt=MAX_DT):
        check_quote(q, 0.02)
        assert q.price <= 1_000_000


def test_well_known_quotes_move_plausibly_at_the_default_scale() -> None:
    # The demo promise: visible moves each second, yet about a session's range in 6.5 minutes.
    market = Market(["AAPL"], seed=2)
    quotes = [q for _, q in run(market, 390)]
    assert sum(a.price != b.price for a, b in itertools.pairwise(quotes)) > 300
    assert abs(quotes[-1].change_pct) < 10


@pytest.mark.parametrize(("dt", "time_scale"), [(1.0, 60.0), (4.0, 60.0), (0.5, 1.0), (1.0, 600.0)])
def test_log_returns_have_the_configured_volatility(dt: float, time_scale: float) -> None:
    sigma = 0.3
    market = Market([spec(open=5000.0, volatility=sigma)], seed=42, time_scale=time_scale)
    prices = [5000.0] + [q.price for _, q in run(market, 20_000, dt=dt)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    expected = sigma * math.sqrt(dt * time_scale / TRADING_SECONDS_PER_YEAR)
    # 20,000 samples: the sample std is within ~0.5% of the truth; cent rounding adds
    # at most ~1e-6 of noise. Seeded, so the 5% band cannot flake.
    assert statistics.stdev(returns) == pytest.approx(expected, rel=0.05)
    assert abs(statistics.fmean(returns)) < 4 * expected / math.sqrt(len(returns))


def test_volume_accumulates_at_the_daily_rate() -> None:
    market = Market([spec(daily_volume=2_340_000)], seed=9, time_scale=60.0)
    steps = 5_000
    q = run(market, steps, dt=1.0)[-1][1]
    expected = 2_340_000 * 60.0 * steps / TRADING_SECONDS_PER_DAY
    assert q.volume == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("codec", list(p.Codec))
def test_quotes_pass_the_strict_protocol_decoder(codec: p.Codec) -> None:
    market = Market(universe(40), seed=1)
    now = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
    for seq, (symbol, q) in enumerate(run(market, 80)):
        message = p.PriceUpdate(symbol=symbol, data=q, seq=seq, timestamp=now)
        assert p.decode_server(p.encode(message, codec), codec) == message


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(),
    open_=st.floats(min_value=0.01, max_value=100_000),
    volatility=st.floats(min_value=0, max_value=10),
    spread_bps=st.floats(min_value=0, max_value=100),
    time_scale=st.floats(min_value=1e-3, max_value=1e4),
    dts=st.lists(st.floats(min_value=0, max_value=MAX_DT), min_size=1, max_size=50),
)
def test_any_spec_seed_and_steps_keep_the_invariants(
    seed: int,
    open_: float,
    volatility: float,
    spread_bps: float,
    time_scale: float,
    dts: list[float],
) -> None:
    s = spec(open=open_, volatility=volatility, spread_bps=spread_bps)
    market = Market([s], seed=seed, time_scale=time_scale)
    volume = 0
    for dt in dts:
        q = market.step("TEST", dt)
        check_quote(q, s.open)
        assert q.volume >= volume
        volume = q.volume


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(), dts=st.lists(st.floats(0, 100), max_size=30))
def test_any_seed_replays_exactly(seed: int, dts: list[float]) -> None:
    a, b = Market(universe(3), seed=seed), Market(universe(3), seed=seed)
    for i, dt in enumerate(dts):
        symbol = a.symbols[i % 3]
        assert a.step(symbol, dt) == b.step(symbol, dt)


def test_a_market_continues_from_a_quote_clamped_to_its_bounds() -> None:
    market = Market(["AAPL"], seed=1)
    quote = p.PriceData(price=123.45, change=0.0, change_pct=0.0, volume=7, bid=123.4, ask=123.5)
    market.continue_from("AAPL", quote)
    assert (market.last("AAPL").price, market.last("AAPL").volume) == (123.45, 7)
    market.continue_from("AAPL", attrs.evolve(quote, price=MAX_PRICE * 10))
    assert market.last("AAPL").price == MAX_PRICE
    with pytest.raises(KeyError):
        market.continue_from("MSFT", quote)
