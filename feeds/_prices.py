"""The simulated price feed: a :class:`~feeds._market.Market` published on a clock.

Theory of operation
-------------------
Tick ``k`` is due at ``start + k / tick_rate`` on ``trio.current_time()``: absolute
deadlines, so the schedule never drifts however long each tick takes. A tick
steps the next ``updates_per_tick`` symbols of the universe, round-robin (a cursor
that wraps), and publishes each quote; every symbol is stepped by the virtual time
since its own previous step, so prices move at the configured volatility whatever
share of the universe a tick covers.

Catch-up policy: when a tick ends after the next one was due, the next tick runs at
once; if more than one tick came due meanwhile, all but the latest are skipped
(counted in ``skipped_ticks``) rather than replayed. A slow publisher therefore gets
back-to-back ticks at worst, never a burst, and skipped time is not lost: the
symbols' next steps cover it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Final, NoReturn

import attrs
import trio

from protocol import SYMBOL_PATTERN, Channel, PriceData

from ._market import DEFAULT_TIME_SCALE, MAX_DT, MAX_TIME_SCALE, MAX_UNIVERSE, WELL_KNOWN, Market
from ._market import universe as _universe
from ._publisher import Publisher

#: Highest ``tick_rate``: Trio's timers resolve to about a millisecond. For more
#: updates per second raise ``updates_per_tick`` instead.
MAX_TICK_RATE: Final = 1_000.0
#: Most ``updates_per_tick``: one step of every symbol of the largest universe. At
#: ``MAX_TICK_RATE`` that is 10^8 updates a second, far past what any bus carries.
MAX_UPDATES_PER_TICK: Final = MAX_UNIVERSE
#: A tick checks for cancellation after this many updates: the in-process bus's
#: ``publish`` is not a checkpoint, and a long tick must still stop when told.
_CANCEL_CHECK_EVERY: Final = 1_024

_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)


def _to_symbols(value: int | Sequence[str]) -> int | tuple[str, ...]:
    # A bare str is a Sequence[str] too; "AAPL" would become ("A", "A", "P", "L").
    if isinstance(value, str | bytes):
        raise ValueError(
            f"symbols must be a count or a sequence of tickers, got the string {value!r}"
        )
    if isinstance(value, int):
        return value
    return tuple(value)


def _check_symbols(_: object, __: object, value: int | tuple[str, ...]) -> None:
    if isinstance(value, bool):
        raise ValueError(f"symbols must be a count or a sequence of tickers, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= MAX_UNIVERSE:
            raise ValueError(f"symbols must be between 1 and {MAX_UNIVERSE}, got {value}")
        return
    if not value:
        raise ValueError("symbols must name at least one ticker")
    if len(value) > MAX_UNIVERSE:
        raise ValueError(f"symbols must name at most {MAX_UNIVERSE} tickers, got {len(value)}")
    seen: set[str] = set()
    for symbol in value:
        if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
            raise ValueError(f"invalid ticker {symbol!r} in symbols: expected {SYMBOL_PATTERN}")
        if symbol in seen:
            raise ValueError(f"duplicate ticker {symbol!r} in symbols")
        seen.add(symbol)


def _check_tick_rate(_: object, __: object, value: float) -> None:
    if not 0 < value <= MAX_TICK_RATE:  # also rejects NaN
        raise ValueError(f"tick_rate must be > 0 and <= {MAX_TICK_RATE} per second, got {value!r}")


def _check_updates_per_tick(_: object, __: object, value: int | None) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_UPDATES_PER_TICK
    ):
        raise ValueError(
            f"updates_per_tick must be None or an int from 1 to {MAX_UPDATES_PER_TICK}, "
            f"got {value!r}"
        )


def _check_seed(_: object, __: object, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"seed must be None or an int, got {value!r}")


def _check_time_scale(_: object, __: object, value: float) -> None:
    if not 0 < value <= MAX_TIME_SCALE:
        raise ValueError(f"time_scale must be > 0 and <= {MAX_TIME_SCALE}, got {value!r}")


@attrs.frozen(kw_only=True)
class PriceFeedConfig:
    """What the price feed simulates and how fast. Validated on construction
    (:exc:`ValueError` naming the field).

    The default is the 16 well-known tickers, each updated once a second.
    """

    #: Universe size (the first n of :func:`feeds._market.universe`) or explicit,
    #: unique tickers.
    symbols: int | tuple[str, ...] = attrs.field(
        default=len(WELL_KNOWN), converter=_to_symbols, validator=_check_symbols
    )
    #: Ticks per second.
    tick_rate: float = attrs.field(default=1.0, validator=_check_tick_rate)
    #: Symbols stepped per tick, round-robin; ``None`` = the whole universe. More than
    #: the universe size steps some symbols several times in one tick.
    updates_per_tick: int | None = attrs.field(default=None, validator=_check_updates_per_tick)
    #: Seed of the market's randomness; ``None`` = different prices every run.
    seed: int | None = attrs.field(default=None, validator=_check_seed)
    #: Trading seconds per wall-clock second (see :mod:`feeds._market`).
    time_scale: float = attrs.field(default=DEFAULT_TIME_SCALE, validator=_check_time_scale)

    def universe(self) -> tuple[str, ...]:
        """The symbols the feed publishes, in round-robin order: ``welcome.symbols``."""
        if isinstance(self.symbols, int):
            return _universe(self.symbols)
        return self.symbols

    def updates_per_second(self) -> float:
        """Price updates the feed publishes per second when it keeps up."""
        per_tick = self.updates_per_tick or len(self.universe())
        return per_tick * self.tick_rate

    def market(self) -> Market:
        """A fresh market at the session open for this config's universe and seed."""
        return Market(self.universe(), seed=self.seed, time_scale=self.time_scale)


@attrs.frozen(kw_only=True)
class PriceFeedStatistics:
    """A snapshot of :meth:`PriceFeed.statistics`; counts cover every run of the feed."""

    #: Ticks completed.
    ticks: int
    #: Price updates published (``publish`` returned).
    updates: int
    #: Ticks dropped because the feed was more than a tick behind (see module doc).
    skipped_ticks: int
    #: Whether a task is in :meth:`PriceFeed.run` now.
    running: bool


class PriceFeed:
    """The price feed and its state, which outlives any one run.

    The market, the round-robin position and the counters persist across calls to
    :meth:`run`, so a supervisor that restarts a crashed feed continues the same
    prices instead of jumping back to the open. Memory is a few objects per symbol;
    the feed queues nothing (the publisher's bus is the only buffer).
    """

    def __init__(self, config: PriceFeedConfig | None = None) -> None:
        self._config = PriceFeedConfig() if config is None else config
        self._market = self._config.market()
        self._symbols = self._market.symbols
        self._per_tick = self._config.updates_per_tick or len(self._symbols)
        self._cursor = 0
        # Virtual time of each symbol's last step, by position; None before the first run.
        self._last_step: list[float] | None = None
        self._ticks = 0
        self._updates = 0
        self._skipped = 0
        self._running = False

    @property
    def config(self) -> PriceFeedConfig:
        return self._config

    @property
    def symbols(self) -> tuple[str, ...]:
        """The universe, in round-robin order: what ``welcome.symbols`` lists."""
        return self._symbols

    @property
    def market(self) -> Market:
        """The market behind the feed: ``market.last(symbol)`` is the latest quote."""
        return self._market

    def continue_from(self, quotes: Mapping[str, PriceData]) -> int:
        """Carry each symbol of the universe found in ``quotes`` on from its quote
        (:meth:`Market.continue_from`); others keep their own. Returns how many were
        carried on. Raises :exc:`RuntimeError` while the feed runs."""
        if self._running:
            raise RuntimeError("a running PriceFeed cannot continue from other quotes")
        carried = 0
        for symbol in self._symbols:
            quote = quotes.get(symbol)
            if quote is not None:
                self._market.continue_from(symbol, quote)
                carried += 1
        return carried

    def statistics(self) -> PriceFeedStatistics:
        """A frozen snapshot of the counters; cheap, never blocks."""
        return PriceFeedStatistics(
            ticks=self._ticks,
            updates=self._updates,
            skipped_ticks=self._skipped,
            running=self._running,
        )

    async def run(
        self,
        publisher: Publisher,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Publish prices on ``Channel.PRICES`` until cancelled; never returns.

        Reports ``task_status.started()`` at once, then publishes the first tick
        immediately (at the first run every quote of it is the session open) and one
        tick every ``1 / tick_rate`` seconds after. Blocks in ``publisher.publish``
        while the bus is full (backpressure), and falls behind the schedule under the
        catch-up policy of the module doc. Cancellation is honoured between ticks, at
        every publish that is a checkpoint, and every ``_CANCEL_CHECK_EVERY`` updates
        of a tick; it leaves the feed ready to :meth:`run` again. Exceptions
        from ``publisher`` propagate. Raises :exc:`RuntimeError` if another task is
        already running this feed.
        """
        if self._running:
            raise RuntimeError("this PriceFeed is already running in another task")
        self._running = True
        try:
            await self._run(publisher, task_status)
        finally:
            self._running = False

    async def _run(self, publisher: Publisher, task_status: trio.TaskStatus[None]) -> NoReturn:
        symbols = self._symbols
        n = len(symbols)
        per_tick = self._per_tick
        step = self._market.step
        interval = 1.0 / self._config.tick_rate
        start = trio.current_time()
        if self._last_step is None:
            self._last_step = [start] * n
        last_step = self._last_step
        k = 0
        task_status.started()
        while True:
            deadline = start + k * interval
            await trio.sleep_until(deadline)
            for update in range(per_tick):
                if update % _CANCEL_CHECK_EVERY == _CANCEL_CHECK_EVERY - 1:
                    await trio.lowlevel.checkpoint_if_cancelled()
                i = self._cursor
                self._cursor = i + 1 if i + 1 < n else 0
                # Clamped: a restart in a later trio.run has a clock with another origin.
                dt = min(max(deadline - last_step[i], 0.0), MAX_DT)
                last_step[i] = deadline
                symbol = symbols[i]
                await publisher.publish(Channel.PRICES, step(symbol, dt), symbol=symbol)
                self._updates += 1
            self._ticks += 1
            k += 1
            # The latest tick already due; more than the next one means we fell behind.
            due = math.floor((trio.current_time() - start) / interval)
            if due > k:
                self._skipped += due - k
                k = due


async def run_price_feed(
    publisher: Publisher,
    config: PriceFeedConfig | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run a fresh :class:`PriceFeed` for ``config`` (default: :class:`PriceFeedConfig`).

    Publishes until cancelled, as :meth:`PriceFeed.run`; every call starts again from
    the session open. Keep a :class:`PriceFeed` to resume prices across restarts.
    """
    await PriceFeed(config).run(publisher, task_status=task_status)
