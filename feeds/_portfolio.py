"""The portfolio monitor: positions marked to market on every tick, exact to the cent.

Theory of operation
-------------------
A :class:`Portfolio` holds cash and positions (:class:`Holding`) as :class:`Decimal`
and the latest quote of each held symbol. :meth:`Portfolio.snapshot` values it:

- ``market_value`` = quantity x price, rounded half-up to the cent;
- cost basis = quantity x avg_cost, rounded half-up to the cent;
- ``unrealized_pnl`` = market_value - cost basis (so the two always add up);
- ``unrealized_pnl_pct`` = unrealized_pnl / cost basis x 100, rounded to 0.01;
- ``total_value`` = cash + the sum of the market values (a sum of cents: exact);
- ``day_change`` = the sum of quantity x the quote's ``change`` (its move since the
  session open), rounded to the cent; ``day_change_pct`` is it over the value at the
  open (``total_value - day_change``), rounded to 0.01.

Prices arrive as floats already rounded to cents; ``Decimal(repr(price))`` recovers
those cents exactly. All arithmetic is decimal and the result is converted to float
only at the edge, in the :class:`~protocol.PortfolioData` it returns: a value with
two decimals and fewer than 16 digits round-trips exactly through a float and the
JSON codec, so the wire shows exactly the cents computed here. A held symbol with no
quote yet is valued at its average cost (no P&L, no day change).

:class:`PortfolioFeed` publishes a snapshot at most once per ``interval`` seconds and
only when it differs from the last one published, to its ``user`` alone: a portfolio
is per-user data (the feed's own is :data:`DEMO_USER`'s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Final, NoReturn

import attrs
import trio

from protocol import SYMBOL_PATTERN, Channel, PortfolioData, Position, PriceData

from ._files import Fields, load_toml
from ._publisher import DEMO_USER, Publisher
from ._tap import PriceTap

#: Most positions a portfolio holds.
MAX_POSITIONS: Final = 1_000
#: Largest amount of cash, quantity or cost accepted: keeps every value exact in a float.
MAX_AMOUNT: Final = Decimal("1e12")
#: Default seconds between two portfolio updates.
DEFAULT_PORTFOLIO_INTERVAL: Final = 1.0

CENT: Final = Decimal("0.01")
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)


def to_decimal(value: object, what: str) -> Decimal:
    """``value`` (an int, a float or a numeric string) as an exact :class:`Decimal`.

    Floats go through ``repr`` (``0.1`` is ``Decimal('0.1')``, not its binary
    expansion). Raises :exc:`ValueError` naming ``what`` for anything else, and for
    NaN, infinities and magnitudes of :data:`MAX_AMOUNT` or more.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not number.is_finite() or abs(number) >= MAX_AMOUNT:
        raise ValueError(f"{what} must be a finite number below {MAX_AMOUNT:,}, got {value!r}")
    return number


def cents(value: Decimal) -> Decimal:
    """``value`` rounded half-up to the cent."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _quantity(value: object) -> Decimal:
    return to_decimal(value, "quantity")


def _avg_cost(value: object) -> Decimal:
    return to_decimal(value, "avg_cost")


def _cash(value: object) -> Decimal:
    return to_decimal(value, "cash")


def _check_symbol(_: object, __: object, value: str) -> None:
    if not isinstance(value, str) or not _SYMBOL_RE.fullmatch(value):
        raise ValueError(f"symbol must be a ticker matching {SYMBOL_PATTERN}, got {value!r}")


def _check_quantity(_: object, __: object, value: Decimal) -> None:
    if not value > 0:
        raise ValueError(f"quantity must be greater than 0, got {value}")


def _check_non_negative(_: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be at least 0, got {value}")


@attrs.frozen(kw_only=True)
class Holding:
    """One position: ``quantity`` shares (fractions allowed, no shorts) bought at
    ``avg_cost`` each. Numbers are converted with :func:`to_decimal`."""

    symbol: str = attrs.field(validator=_check_symbol)
    quantity: Decimal = attrs.field(converter=_quantity, validator=_check_quantity)
    avg_cost: Decimal = attrs.field(converter=_avg_cost, validator=_check_non_negative)


def _to_holdings(value: Iterable[Holding]) -> tuple[Holding, ...]:
    holdings = tuple(value)
    if len(holdings) > MAX_POSITIONS:
        raise ValueError(f"at most {MAX_POSITIONS} positions, got {len(holdings)}")
    seen: set[str] = set()
    for holding in holdings:
        if holding.symbol in seen:
            raise ValueError(f"two positions in {holding.symbol}: merge them into one")
        seen.add(holding.symbol)
    return holdings


@attrs.frozen(kw_only=True)
class PortfolioSpec:
    """Cash and positions, as a portfolio file gives them."""

    cash: Decimal = attrs.field(converter=_cash, validator=_check_non_negative)
    positions: tuple[Holding, ...] = attrs.field(converter=_to_holdings)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(holding.symbol for holding in self.positions)


def _float(value: Decimal) -> float:
    result = float(value)
    assert math.isfinite(result)
    return result


class Portfolio:
    """A :class:`PortfolioSpec` and the latest quote of each held symbol (see the
    module doc). Synchronous; memory is one quote per position."""

    def __init__(self, spec: PortfolioSpec) -> None:
        self.spec = spec
        # Per held symbol: (price, change since the open) of its latest quote.
        self._quotes: dict[str, tuple[Decimal, Decimal]] = {}
        self._held = frozenset(spec.symbols)

    def observe(self, symbol: str, quote: PriceData) -> bool:
        """Record ``quote``; whether ``symbol`` is held (other symbols are ignored)."""
        if symbol not in self._held:
            return False
        self._quotes[symbol] = (
            Decimal(repr(quote.price)),
            Decimal(repr(quote.change)),
        )
        return True

    def snapshot(self) -> PortfolioData:
        """The portfolio valued at the latest quotes, rounded to the cent."""
        cash = cents(self.spec.cash)
        total = cash
        day = Decimal(0)
        positions = []
        for holding in self.spec.positions:
            price, change = self._quotes.get(holding.symbol, (holding.avg_cost, Decimal(0)))
            market_value = cents(holding.quantity * price)
            cost_basis = cents(holding.quantity * holding.avg_cost)
            pnl = market_value - cost_basis
            pnl_pct = cents(pnl / cost_basis * 100) if cost_basis else Decimal(0)
            total += market_value
            day += holding.quantity * change
            positions.append(
                Position(
                    symbol=holding.symbol,
                    quantity=_float(holding.quantity),
                    avg_cost=_float(holding.avg_cost),
                    price=_float(price),
                    market_value=_float(market_value),
                    unrealized_pnl=_float(pnl),
                    unrealized_pnl_pct=_float(pnl_pct),
                )
            )
        day_change = cents(day)
        at_open = total - day_change
        day_pct = cents(day_change / at_open * 100) if at_open > 0 else Decimal(0)
        return PortfolioData(
            total_value=_float(total),
            cash=_float(cash),
            day_change=_float(day_change),
            day_change_pct=_float(day_pct),
            positions=tuple(positions),
        )


# --- portfolio files and the demo portfolio ---------------------------------------------


def load_portfolio(path: Path) -> PortfolioSpec:
    """The portfolio of the TOML file ``path`` (``cash`` and ``[[positions]]``; see
    docs/feeds.md). Raises :exc:`ValueError` naming the file, the entry and the field."""
    document = load_toml(path)
    top = Fields(document, str(path))
    top.check_keys({"cash", "positions"})
    tables = document.get("positions", [])
    if not isinstance(tables, list):
        raise ValueError(f"{path}: 'positions' must be an array of tables ([[positions]])")
    if len(tables) > MAX_POSITIONS:
        raise ValueError(f"{path}: {len(tables)} positions, at most {MAX_POSITIONS}")
    holdings = []
    for i, table in enumerate(tables):
        fields = Fields(table, f"{path}: positions[{i}]")
        fields.check_keys({"symbol", "quantity", "avg_cost"})
        for key in ("quantity", "avg_cost"):
            if not fields.has(key):
                raise ValueError(f"{fields.where}: missing field {key!r}")
        try:
            holdings.append(
                Holding(
                    symbol=fields.string("symbol"),
                    quantity=fields.raw("quantity"),
                    avg_cost=fields.raw("avg_cost"),
                )
            )
        except ValueError as exc:
            raise ValueError(f"{fields.where}: {exc}") from None
    try:
        return PortfolioSpec(cash=document.get("cash", 0), positions=holdings)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


#: The demo portfolio's positions: (quantity, avg_cost as a fraction of the open).
_DEMO_POSITIONS: Final = ((50, "0.92"), (20, "1.03"), (40, "0.97"), (30, "0.88"), (100, "1.05"))


def demo_portfolio(opens: Mapping[str, float]) -> PortfolioSpec:
    """The built-in portfolio: $25,000 cash and a position in each of the first five
    symbols of ``opens`` (symbol to opening price), some in profit, some not."""
    holdings = [
        Holding(
            symbol=symbol,
            quantity=quantity,
            avg_cost=cents(Decimal(repr(open_)) * Decimal(factor)),
        )
        for (symbol, open_), (quantity, factor) in zip(opens.items(), _DEMO_POSITIONS, strict=False)
    ]
    return PortfolioSpec(cash="25000.00", positions=holdings)


# --- the feed ---------------------------------------------------------------------------


class PortfolioFeed:
    """The portfolio feed: marks the portfolio to every price of ``tap`` and publishes
    ``portfolio_update`` at most once per ``interval`` seconds, only on change, to the
    connections of ``user``, whose portfolio it is.

    The portfolio (and its latest quotes) outlives any one run.
    """

    def __init__(
        self,
        tap: PriceTap,
        spec: PortfolioSpec,
        *,
        interval: float = DEFAULT_PORTFOLIO_INTERVAL,
        user: str = DEMO_USER,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"portfolio interval must be greater than 0 seconds, got {interval!r}")
        self.tap = tap
        self.interval = interval
        self.user = user
        self.portfolio = Portfolio(spec)
        self.last_published: PortfolioData | None = None

    def _observe(self, batch: Iterable[tuple[str, PriceData]]) -> None:
        for symbol, quote in batch:
            self.portfolio.observe(symbol, quote)

    async def run(
        self, publisher: Publisher, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Publish portfolio updates until cancelled; never returns.

        After a change, waits until ``interval`` has passed since the previous
        publish (prices keep arriving, conflated, meanwhile), then publishes the
        latest snapshot if it still differs. Publishing blocks while the bus is
        full; exceptions propagate.
        """
        async with self.tap.open_stream() as stream:
            task_status.started()
            last_time = -math.inf
            while True:
                self._observe(await stream.receive())
                if self.portfolio.snapshot() == self.last_published:
                    continue
                await trio.sleep_until(last_time + self.interval)
                self._observe(stream.receive_nowait())
                snapshot = self.portfolio.snapshot()
                if snapshot == self.last_published:
                    continue
                last_time = trio.current_time()
                await publisher.publish(Channel.PORTFOLIO, snapshot, user=self.user)
                self.last_published = snapshot
