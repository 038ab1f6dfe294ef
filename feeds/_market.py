"""A deterministic, synchronous market model: the prices behind the simulated feed.

Theory of operation
-------------------
Each symbol follows geometric Brownian motion with zero drift in log terms: over a
step of ``dt`` seconds the log price moves by ``sigma * sqrt(years) * Z`` with ``Z``
standard normal, where ``sigma`` is the symbol's annualised volatility and
``years = dt * time_scale / TRADING_SECONDS_PER_YEAR``. The median price stays at
the open; there is no trend to run away with in a long demo.

``time_scale`` is how many seconds of trading time pass per second of ``dt``. A
trading year is 252 sessions of 6.5 hours (5,896,800 s). At the default of 60 (one
minute of trading per wall-clock second) a stock with 30% volatility moves about
0.1% per second, so a $200 stock ticks by some 20 cents: visible on a dashboard,
yet over a 6.5-minute demo it travels about as far as it would in a real session
(~1.9%). ``time_scale=1`` gives true real-time volatility.

Quotes are derived from the exact price: ``price`` is rounded to cents, ``bid`` and
``ask`` sit half the symbol's spread (a few basis points) either side, rounded to
cents, never crossed and at least a cent apart (``bid <= price <= ask``,
``bid < ask``). ``change`` and ``change_pct`` are against the session open (the
starting price). ``volume`` is the cumulative session volume: each step adds a
random integer whose mean is the symbol's average daily volume spread over the
trading time that passed.

Nothing here reads a clock or touches trio: time comes in as ``dt``, randomness
from one seeded :class:`random.Random`, so a seed and a sequence of calls
determine every quote.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

from protocol import SYMBOL_PATTERN, PriceData

from ._files import read_text

#: Seconds of trading in a year: 252 sessions of 6.5 hours.
TRADING_SECONDS_PER_YEAR: Final = 252 * 6.5 * 3600
#: Seconds of trading in one session, over which ``daily_volume`` trades.
TRADING_SECONDS_PER_DAY: Final = 6.5 * 3600
#: Trading seconds per second of ``dt`` unless a market is told otherwise (see module doc).
DEFAULT_TIME_SCALE: Final = 60.0
#: Largest ``time_scale`` a market accepts: one wall-clock second is then ~2.8 trading hours.
MAX_TIME_SCALE: Final = 10_000.0
#: Longest single step. A feed steps every symbol far more often than daily.
MAX_DT: Final = 86_400.0
#: Largest universe :func:`universe` builds: beyond this a welcome message alone is megabytes.
MAX_UNIVERSE: Final = 100_000
#: Largest ``daily_volume`` of a spec: ~30x the busiest real stock.
MAX_DAILY_VOLUME: Final = 10_000_000_000
#: Guards on the exact price. GBM never reaches them at any sensible horizon; they keep
#: quotes well-formed (positive, finite, cents) when a caller passes an absurd ``dt``.
MIN_PRICE: Final = 0.01
MAX_PRICE: Final = 1_000_000.0

_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)


def _check_symbol(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not _SYMBOL_RE.fullmatch(value):
        raise ValueError(f"invalid ticker {value!r}: expected a match for {SYMBOL_PATTERN}")


def _check_volatility(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    # 0 is a flat line (handy in tests); 1000% is beyond any stock that still trades.
    if not 0 <= value <= 10:
        raise ValueError(f"volatility must be between 0 and 10 (1000%), got {value!r}")


def _check_open(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not MIN_PRICE <= value <= MAX_PRICE:
        raise ValueError(f"open must be between {MIN_PRICE} and {MAX_PRICE}, got {value!r}")


def _check_spread(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    # Up to 1%: wider than any listed stock, and keeps the bid above zero at MIN_PRICE.
    if not 0 <= value <= 100:
        raise ValueError(f"spread_bps must be between 0 and 100, got {value!r}")


def _check_volume(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= MAX_DAILY_VOLUME:
        raise ValueError(f"daily_volume must be between 0 and {MAX_DAILY_VOLUME}, got {value!r}")


def _to_cents(value: float) -> float:
    return round(float(value), 2)


@attrs.frozen(kw_only=True)
class SymbolSpec:
    """How one symbol trades: where it opens and how it moves."""

    symbol: str = attrs.field(validator=_check_symbol)
    #: Session open in dollars; ``change`` counts from here. Rounded to cents.
    open: float = attrs.field(converter=_to_cents, validator=_check_open)
    #: Annualised volatility of log returns, e.g. 0.3 for 30%; 0 keeps the price flat.
    volatility: float = attrs.field(validator=_check_volatility)
    #: Full bid-ask spread in basis points of the price.
    spread_bps: float = attrs.field(validator=_check_spread)
    #: Average shares traded in one session.
    daily_volume: int = attrs.field(validator=_check_volume)


def _spec(
    symbol: str, price: float, volatility: float, spread_bps: float, volume: int
) -> SymbolSpec:
    return SymbolSpec(
        symbol=symbol,
        open=price,
        volatility=volatility,
        spread_bps=spread_bps,
        daily_volume=volume,
    )


#: The well-known tickers every universe starts with: plausible prices, volatilities
#: and volumes of large US stocks (not quotes of any particular day).
WELL_KNOWN: Final[tuple[SymbolSpec, ...]] = (
    _spec("AAPL", 190.00, 0.25, 1.0, 55_000_000),
    _spec("MSFT", 420.00, 0.24, 1.0, 20_000_000),
    _spec("GOOG", 170.00, 0.28, 1.5, 22_000_000),
    _spec("AMZN", 185.00, 0.32, 1.5, 40_000_000),
    _spec("NVDA", 120.00, 0.50, 1.0, 300_000_000),
    _spec("META", 500.00, 0.38, 1.5, 15_000_000),
    _spec("TSLA", 250.00, 0.60, 1.5, 100_000_000),
    _spec("JPM", 200.00, 0.22, 2.0, 9_000_000),
    _spec("V", 275.00, 0.18, 2.0, 6_000_000),
    _spec("NFLX", 650.00, 0.40, 3.0, 4_000_000),
    _spec("AMD", 160.00, 0.50, 1.5, 50_000_000),
    _spec("INTC", 30.00, 0.40, 3.0, 40_000_000),
    _spec("DIS", 100.00, 0.28, 2.0, 9_000_000),
    _spec("KO", 62.00, 0.15, 2.0, 13_000_000),
    _spec("XOM", 115.00, 0.25, 2.0, 16_000_000),
    _spec("BRK.B", 410.00, 0.16, 3.0, 4_000_000),
)
_WELL_KNOWN_BY_SYMBOL: Final = {spec.symbol: spec for spec in WELL_KNOWN}


def universe(n: int) -> tuple[str, ...]:
    """The first ``n`` symbols of the default universe.

    The :data:`WELL_KNOWN` tickers in order, then synthetic ones ``SYN0001``,
    ``SYN0002``, ... All are unique and match ``SYMBOL_PATTERN``; ``universe(n)`` is a
    prefix of ``universe(n + 1)``. Raises :exc:`ValueError` unless
    ``0 <= n <= MAX_UNIVERSE``.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"universe size must be an int, got {type(n).__name__}")
    if not 0 <= n <= MAX_UNIVERSE:
        raise ValueError(f"universe size must be between 0 and {MAX_UNIVERSE}, got {n}")
    known = tuple(spec.symbol for spec in WELL_KNOWN[:n])
    return known + tuple(f"SYN{i:04d}" for i in range(1, n - len(known) + 1))


#: What a universe file may hold, in bytes: 100,000 tickers of 10 characters and more.
MAX_UNIVERSE_TEXT: Final = 4 * 1024 * 1024


def parse_universe(text: str, *, source: str = "the universe") -> tuple[str, ...]:
    """The tickers of a universe written as text: separated by commas, spaces or line
    breaks (one per line in a file, ``AAPL,ORCL`` on a command line), ``#`` starting a
    comment to the end of its line, in the order given.

    Raises :exc:`ValueError` naming ``source`` (and the line, for text of several
    lines) for a string that is not a ticker (``SYMBOL_PATTERN``; lower case gets a
    hint), a ticker given twice, none at all, or more than :data:`MAX_UNIVERSE`.
    """
    symbols: dict[str, int] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        where = f"{source} line {number}" if len(lines) > 1 else source
        for name in line.partition("#")[0].replace(",", " ").split():
            if not _SYMBOL_RE.fullmatch(name):
                hint = (
                    f" (tickers are upper case: {name.upper()})"
                    if (_SYMBOL_RE.fullmatch(name.upper()))
                    else ""
                )
                raise ValueError(
                    f"{where}: {name[:20]!r} is not a ticker: 1-10 of A-Z 0-9 . -, a "
                    f"letter first{hint}"
                )
            if name in symbols:
                raise ValueError(
                    f"{where}: {name} is listed twice (first on line {symbols[name]})"
                    if len(lines) > 1
                    else f"{where}: {name} is listed twice"
                )
            symbols[name] = number
            if len(symbols) > MAX_UNIVERSE:
                raise ValueError(f"{where}: more than {MAX_UNIVERSE} tickers")
    if not symbols:
        raise ValueError(f"{source}: names no ticker")
    return tuple(symbols)


def load_universe(path: Path) -> tuple[str, ...]:
    """The tickers of the universe file ``path`` (see :func:`parse_universe`); raises
    :exc:`ValueError` naming the file (and line) when it cannot be read or is bad."""
    return parse_universe(read_text(path, limit=MAX_UNIVERSE_TEXT), source=str(path))


def symbol_spec(symbol: str) -> SymbolSpec:
    """The spec of ``symbol``: from :data:`WELL_KNOWN`, else derived from its name.

    Any other valid ticker gets an open between $5 and $500, a volatility of 15-60%,
    a spread of 2-10 bps and a daily volume of 200k-20M shares, drawn from a
    :class:`random.Random` seeded with the ticker itself: the same symbol always
    gets the same spec, whatever the market's seed or the rest of the universe.
    Raises :exc:`ValueError` for a string that is not a valid ticker.
    """
    known = _WELL_KNOWN_BY_SYMBOL.get(symbol)
    if known is not None:
        return known
    # A str seed is hashed with SHA-512, so this is stable across runs and processes
    # (unlike hash(), which PYTHONHASHSEED randomises).
    rng = random.Random(f"feeds.market:{symbol}")
    return _spec(
        symbol,
        math.exp(rng.uniform(math.log(5.0), math.log(500.0))),
        rng.uniform(0.15, 0.60),
        rng.uniform(2.0, 10.0),
        int(math.exp(rng.uniform(math.log(2e5), math.log(2e7)))),
    )


class _State:
    """Mutable per-symbol state; per-step constants are folded in once, for speed."""

    __slots__ = ("half_spread", "last", "open", "price", "sigma", "spec", "volume", "volume_rate")

    def __init__(self, spec: SymbolSpec, time_scale: float) -> None:
        self.spec = spec
        self.open = spec.open
        self.price = spec.open
        # Per sqrt(second of dt): sigma * sqrt(time_scale / year).
        self.sigma = spec.volatility * math.sqrt(time_scale / TRADING_SECONDS_PER_YEAR)
        self.half_spread = spec.spread_bps / 20_000.0
        # Mean shares per second of dt.
        self.volume_rate = spec.daily_volume * time_scale / TRADING_SECONDS_PER_DAY
        self.volume = 0
        self.last = _quote(self)


def _quote(state: _State) -> PriceData:
    exact = state.price
    price = round(exact, 2)
    half = exact * state.half_spread
    # round() is monotonic, so bid <= price <= ask already; only a spread narrower
    # than a cent can collapse them, and then the ask goes one cent up.
    bid = round(exact - half, 2)
    ask = round(exact + half, 2)
    if ask - bid < 0.005:
        ask = round(bid + 0.01, 2)
    open_ = state.open
    return PriceData(
        price=price,
        change=round(price - open_, 2),
        change_pct=round((price - open_) / open_ * 100.0, 2),
        volume=state.volume,
        bid=bid,
        ask=ask,
    )


class Market:
    """Prices of a fixed set of symbols, moved one symbol at a time.

    ``symbols`` are tickers (specs from :func:`symbol_spec`) or :class:`SymbolSpec`
    for a custom universe; they must be unique. ``seed`` makes every quote
    reproducible: the same seed, symbols, ``time_scale`` and sequence of
    :meth:`step` calls give identical quotes. ``seed=None`` seeds from the OS.

    Not thread-safe; every method is synchronous, never blocks and reads no clock.
    """

    def __init__(
        self,
        symbols: Iterable[str | SymbolSpec],
        *,
        seed: int | None = None,
        time_scale: float = DEFAULT_TIME_SCALE,
    ) -> None:
        if not 0 < time_scale <= MAX_TIME_SCALE:
            raise ValueError(f"time_scale must be > 0 and <= {MAX_TIME_SCALE}, got {time_scale!r}")
        self._time_scale = time_scale
        self._rng = random.Random(seed)
        self._states: dict[str, _State] = {}
        for item in symbols:
            spec = item if isinstance(item, SymbolSpec) else symbol_spec(item)
            if spec.symbol in self._states:
                raise ValueError(f"duplicate symbol {spec.symbol!r}")
            self._states[spec.symbol] = _State(spec, time_scale)
        self._symbols = tuple(self._states)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols of this market, in the order given."""
        return self._symbols

    @property
    def time_scale(self) -> float:
        """Seconds of trading time per second of ``dt``."""
        return self._time_scale

    def spec(self, symbol: str) -> SymbolSpec:
        """How ``symbol`` trades. Raises :exc:`KeyError` for a symbol not in this market."""
        return self._states[symbol].spec

    def last(self, symbol: str) -> PriceData:
        """The latest quote of ``symbol``: the open (volume 0) until its first step.

        Raises :exc:`KeyError` for a symbol not in this market.
        """
        return self._states[symbol].last

    def continue_from(self, symbol: str, quote: PriceData) -> None:
        """Carry ``symbol`` on from ``quote``, another market's last: its price and
        volume become this market's (the spread and the open stay this market's). A
        price beyond ``[MIN_PRICE, MAX_PRICE]`` is clamped, as :meth:`step` clamps.

        How a standby feed that takes over continues the prices the stopped feed
        published rather than jump back to its own. Raises :exc:`KeyError` for a
        symbol not in this market.
        """
        state = self._states[symbol]
        state.price = min(max(quote.price, MIN_PRICE), MAX_PRICE)
        state.volume = quote.volume
        state.last = _quote(state)

    def step(self, symbol: str, dt: float) -> PriceData:
        """Advance ``symbol`` by ``dt`` seconds and return its new quote.

        ``dt`` is the time since this symbol's previous step (scaled by
        ``time_scale``); ``dt=0`` re-quotes the current price without moving it.
        Other symbols do not move. Raises :exc:`KeyError` for a symbol not in this
        market and :exc:`ValueError` unless ``0 <= dt <= MAX_DT``.
        """
        state = self._states[symbol]
        if not 0.0 <= dt <= MAX_DT:  # also rejects NaN
            raise ValueError(f"dt must be between 0 and {MAX_DT} seconds, got {dt!r}")
        rng = self._rng
        try:
            price = state.price * math.exp(state.sigma * math.sqrt(dt) * rng.gauss(0.0, 1.0))
        except OverflowError:
            price = MAX_PRICE
        if price < MIN_PRICE:
            price = MIN_PRICE
        elif price > MAX_PRICE:
            price = MAX_PRICE
        state.price = price
        # Uniform on [0, 2 * mean), rounded: integer, non-negative, mean ~ the rate.
        state.volume += int(state.volume_rate * dt * 2.0 * rng.random() + 0.5)
        quote = state.last = _quote(state)
        return quote
