"""A simple, documented trading-signal agent: moving-average crossover with momentum.

Theory of operation
-------------------
Per symbol the agent keeps the last :data:`SLOW_WINDOW` prices it observed (ticks,
not seconds: the windows stretch when prices arrive conflated). From them:

- ``fast``: the mean of the last :data:`FAST_WINDOW` prices; ``slow``: the mean of
  all held (up to :data:`SLOW_WINDOW`);
- ``gap`` = (fast - slow) / slow, in percent: the trend;
- ``momentum`` = the price change over the last :data:`MOMENTUM_WINDOW` ticks (or
  as many as are held), in percent.

The action is ``buy`` when trend and momentum are both up, ``sell`` when both are
down, ``hold`` otherwise. Confidence, in [0, 1], rounded to 2 places:

- buy / sell: ``0.5 * min(1, |gap| / GAP_SCALE) + 0.5 * min(1, |momentum| / MOMENTUM_SCALE)``
  (how strongly both agree);
- hold: ``0.5 * (1 - min(1, |gap| / GAP_SCALE)) + 0.5 * (1 - min(1, |momentum| / MOMENTUM_SCALE))``
  (how flat both are).

The reasoning sentence is built from exactly those numbers, and says when the fast
average crossed the slow one since the symbol's previous signal.

Rate limit: :class:`SignalFeed` publishes at most one signal every ``interval``
seconds. Each time it picks, in round-robin order from where it stopped, the first
symbol whose action changed since its last published signal, or failing that the
next symbol with at least :data:`MIN_SAMPLES` prices. So a demo shows a steady
trickle of signals, with changes of opinion first.

Not investment advice: a demonstration of the signal channel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final, NoReturn

import trio

from protocol import Channel, SignalAction, SignalData

from ._publisher import Publisher
from ._tap import PriceTap

#: Ticks in the fast moving average.
FAST_WINDOW: Final = 3
#: Ticks in the slow moving average: also the prices held per symbol.
SLOW_WINDOW: Final = 10
#: Ticks the momentum looks back.
MOMENTUM_WINDOW: Final = 5
#: Prices a symbol needs before it gets a signal.
MIN_SAMPLES: Final = 5
#: A trend gap (percent) at or beyond which the trend counts fully towards confidence.
GAP_SCALE: Final = 0.25
#: A momentum (percent) at or beyond which it counts fully towards confidence.
MOMENTUM_SCALE: Final = 0.5
#: When no signal is ready, the fraction of the interval after which the feed looks again.
RETRY_FRACTION: Final = 0.25
#: Default seconds between two signals.
DEFAULT_SIGNAL_INTERVAL: Final = 3.0


def _trend(value: float) -> str:
    return "above" if value > 0 else "below" if value < 0 else "level with"


class SignalAgent:
    """The agent's state: recent prices per symbol; synchronous, reads no clock."""

    def __init__(self) -> None:
        self._prices: dict[str, deque[float]] = {}
        self._order: list[str] = []
        self._cursor = 0
        # Per symbol: the action and the sign of the gap at its last published signal.
        self._last: dict[str, tuple[SignalAction, int]] = {}

    def observe(self, symbol: str, price: float) -> None:
        """Record a price of ``symbol`` (the last :data:`SLOW_WINDOW` are kept)."""
        prices = self._prices.get(symbol)
        if prices is None:
            prices = self._prices[symbol] = deque(maxlen=SLOW_WINDOW)
            self._order.append(symbol)
        prices.append(price)

    def evaluate(self, symbol: str) -> SignalData | None:
        """The signal ``symbol`` would get now, or ``None`` with too few prices.
        Changes no state."""
        prices = self._prices.get(symbol)
        if prices is None or len(prices) < MIN_SAMPLES:
            return None
        held = list(prices)
        fast_n = min(FAST_WINDOW, len(held))
        fast = sum(held[-fast_n:]) / fast_n
        slow = sum(held) / len(held)
        back = min(MOMENTUM_WINDOW, len(held) - 1)
        then, now = held[-1 - back], held[-1]
        gap = (fast - slow) / slow * 100.0
        momentum = (now - then) / then * 100.0
        gap_part = min(1.0, abs(gap) / GAP_SCALE)
        momentum_part = min(1.0, abs(momentum) / MOMENTUM_SCALE)
        if gap > 0 and momentum > 0:
            action = SignalAction.BUY
        elif gap < 0 and momentum < 0:
            action = SignalAction.SELL
        else:
            action = SignalAction.HOLD
        if action is SignalAction.HOLD:
            confidence = 0.5 * (1 - gap_part) + 0.5 * (1 - momentum_part)
        else:
            confidence = 0.5 * gap_part + 0.5 * momentum_part
        crossed = ""
        previous = self._last.get(symbol)
        sign = (gap > 0) - (gap < 0)
        if previous is not None and previous[1] != 0 and sign != 0 and sign != previous[1]:
            crossed = f", having crossed {_trend(gap)} it since the last signal"
        moved = "rose" if momentum > 0 else "fell" if momentum < 0 else "was unchanged"
        reasoning = (
            f"{symbol}: the {fast_n}-tick average ${fast:,.2f} is {abs(gap):.2f}% "
            f"{_trend(gap)} the {len(held)}-tick average ${slow:,.2f}{crossed}, and the "
            f"price {moved} {abs(momentum):.2f}% over the last {back} ticks to ${now:,.2f}; "
            f"{action.value} with confidence {confidence:.2f}."
        )
        return SignalData(
            symbol=symbol,
            action=action,
            confidence=round(max(0.0, min(1.0, confidence)), 2),
            reasoning=reasoning,
        )

    def next_signal(self) -> SignalData | None:
        """The signal to publish now (see the module doc for the choice), recorded as
        published; ``None`` when no symbol has enough prices."""
        order = self._order
        n = len(order)
        candidates: list[tuple[int, SignalData]] = []
        for k in range(n):
            i = (self._cursor + k) % n
            signal = self.evaluate(order[i])
            if signal is None:
                continue
            previous = self._last.get(signal.symbol)
            if previous is None or previous[0] is not signal.action:
                candidates = [(i, signal)]
                break
            if not candidates:
                candidates.append((i, signal))
        if not candidates:
            return None
        i, signal = candidates[0]
        self._cursor = (i + 1) % n
        gap_sign = self._gap_sign(signal.symbol)
        self._last[signal.symbol] = (signal.action, gap_sign)
        return signal

    def _gap_sign(self, symbol: str) -> int:
        held = list(self._prices[symbol])
        fast_n = min(FAST_WINDOW, len(held))
        gap = sum(held[-fast_n:]) / fast_n - sum(held) / len(held)
        return (gap > 0) - (gap < 0)


class SignalFeed:
    """The signal feed: the agent observes every price of ``tap`` and a signal is
    published every ``interval`` seconds (when one is ready).

    The agent outlives any one run, so a restarted feed keeps its price history.
    """

    def __init__(self, tap: PriceTap, *, interval: float = DEFAULT_SIGNAL_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"signal interval must be greater than 0 seconds, got {interval!r}")
        self.tap = tap
        self.interval = interval
        self.agent = SignalAgent()

    def observe_all(self, batch: Iterable[tuple[str, float]]) -> None:
        for symbol, price in batch:
            self.agent.observe(symbol, price)

    async def run(
        self, publisher: Publisher, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Publish ``trading_signal`` events until cancelled; never returns.

        The first is due ``interval`` seconds after the start (or, while no symbol
        has enough prices, as soon after as one has), then one every ``interval``
        (absolute deadlines; a slow publish delays, never bunches, the next).
        Publishing blocks while the bus is full; exceptions propagate.
        """
        async with self.tap.open_stream() as stream:
            task_status.started()
            due = trio.current_time() + self.interval
            while True:
                with trio.move_on_at(due):
                    while True:
                        batch = await stream.receive()
                        self.observe_all((symbol, quote.price) for symbol, quote in batch)
                self.observe_all((symbol, quote.price) for symbol, quote in stream.receive_nowait())
                signal = self.agent.next_signal()
                if signal is None:
                    # Nothing ready (too few prices yet): look again soon, so the first
                    # signal comes once the data allows, not a whole interval later.
                    due = trio.current_time() + self.interval * RETRY_FRACTION
                    continue
                await publisher.publish(Channel.SIGNALS, signal)
                due += self.interval
                now = trio.current_time()
                if due <= now:  # the publish overran a whole interval: skip, never bunch
                    due = now + self.interval
