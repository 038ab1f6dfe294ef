"""Demo system events: the notifications a running agent system would send.

Theory of operation
-------------------
The rest of the agent system (training jobs, trading agents, the market-data
adapters) announces what it does on ``notifications`` through the publish API. A
demo has no such system behind it, so :class:`DemoEventsFeed` stands in for it, so
that the dashboard's notification panel is not empty:

- ``success``: a model finished training, a backtest finished;
- ``info``: an agent rebalanced its portfolio, a risk report is ready;
- ``warning``: market data is delayed, a model drifts and is retrained.

``error`` is left to real failures (the supervisor's ``Feed X went down``), so a demo
never looks broken when it is not.

Schedule: the first event ``FIRST_DELAY`` seconds after the start, then one every
``interval`` seconds on average (each gap drawn uniformly between half and one and a
half times it), on absolute deadlines. The first three events are one of each kind
(success, info, warning, in that order), so with the default 15 s every kind has
appeared 48 s after the start at the latest (3 + 22.5 + 22.5); after them the kind is drawn (info
half the time, success and warning a quarter each).

The details (models, agents, symbols from the price universe, figures) come from one
:class:`random.Random`, seeded like the market, so a seed fixes the messages; the ids
are random (uuid4) so that they never repeat across restarts of the gateway.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

import trio

from protocol import Channel, NotificationData, NotificationType

from ._publisher import Publisher

#: Default mean seconds between two events.
DEFAULT_EVENT_INTERVAL: Final = 15.0
#: Seconds from the start to the first event.
FIRST_DELAY: Final = 3.0
#: The kinds of the first events, in order: one of each.
FIRST_KINDS: Final = (NotificationType.SUCCESS, NotificationType.INFO, NotificationType.WARNING)

_MODELS: Final = ("momentum-lstm", "mean-reversion-xgb", "news-sentiment", "volatility-garch")
_AGENTS: Final = ("alpha-momentum", "beta-value", "gamma-pairs", "delta-hedge")
_VENUES: Final = ("NASDAQ", "NYSE", "ARCA", "BATS")

Compose = Callable[[random.Random, Sequence[str]], str]


def _training_completed(rng: random.Random, symbols: Sequence[str]) -> str:
    model = rng.choice(_MODELS)
    return (
        f"Model training completed: {model} v{rng.randint(2, 40)} "
        f"(validation accuracy {rng.uniform(55, 72):.1f}%)"
    )


def _backtest_finished(rng: random.Random, symbols: Sequence[str]) -> str:
    return (
        f"Backtest finished: {rng.choice(_AGENTS)} on {rng.choice(symbols)}, "
        f"Sharpe ratio {rng.uniform(0.4, 2.2):.2f} over {rng.choice((90, 180, 365))} days"
    )


def _rebalanced(rng: random.Random, symbols: Sequence[str]) -> str:
    if len(symbols) < 2:
        return f"Agent {rng.choice(_AGENTS)} kept its portfolio: all in {symbols[0]}"
    bought, sold = rng.sample(list(symbols[: min(len(symbols), 20)]), 2)
    return (
        f"Agent {rng.choice(_AGENTS)} rebalanced its portfolio: bought {rng.randint(5, 200)} "
        f"{bought}, sold {rng.randint(5, 200)} {sold}"
    )


def _risk_report(rng: random.Random, symbols: Sequence[str]) -> str:
    return (
        f"Daily risk report ready: 1-day VaR (95%) ${rng.randint(800, 4000):,}, "
        f"largest exposure {rng.choice(symbols)}"
    )


def _data_delayed(rng: random.Random, symbols: Sequence[str]) -> str:
    return (
        f"Market data delayed: {rng.choice(_VENUES)} quotes for {rng.choice(symbols)} "
        f"are {rng.randint(2, 15)}s behind"
    )


def _model_drift(rng: random.Random, symbols: Sequence[str]) -> str:
    return (
        f"Model drift detected: {rng.choice(_MODELS)} accuracy down "
        f"{rng.uniform(2, 8):.1f} points this week; retraining scheduled"
    )


_MESSAGES: Final[dict[NotificationType, tuple[Compose, ...]]] = {
    NotificationType.SUCCESS: (_training_completed, _backtest_finished),
    NotificationType.INFO: (_rebalanced, _risk_report),
    NotificationType.WARNING: (_data_delayed, _model_drift),
}
#: After the first events: info half the time, success and warning a quarter each.
_LATER_KINDS: Final = (
    NotificationType.INFO,
    NotificationType.INFO,
    NotificationType.SUCCESS,
    NotificationType.WARNING,
)


class DemoEvents:
    """The events themselves, in order; synchronous, reads no clock."""

    def __init__(self, symbols: Sequence[str], *, seed: int | None = None) -> None:
        if not symbols:
            raise ValueError("demo events need at least one symbol to talk about")
        self.symbols = tuple(symbols)
        self._rng = random.Random(seed)
        #: Events produced so far.
        self.count = 0

    def next_event(self) -> NotificationData:
        """The next notification (see the module doc for the choice of kind)."""
        rng = self._rng
        if self.count < len(FIRST_KINDS):
            kind = FIRST_KINDS[self.count]
            # The spec's example first: a model finished training.
            compose = _MESSAGES[kind][0] if self.count == 0 else rng.choice(_MESSAGES[kind])
        else:
            kind = rng.choice(_LATER_KINDS)
            compose = rng.choice(_MESSAGES[kind])
        self.count += 1
        return NotificationData(id=uuid.uuid4().hex, message=compose(rng, self.symbols), type=kind)

    def next_gap(self, interval: float) -> float:
        """Seconds until the event after this one: uniform in [interval / 2, 1.5 x interval]."""
        return self._rng.uniform(0.5 * interval, 1.5 * interval)


class DemoEventsFeed:
    """The demo's system notifications on a schedule (see the module doc).

    The events outlive any one run, so a restarted feed goes on where it stopped.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int | None = None,
        interval: float = DEFAULT_EVENT_INTERVAL,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"event interval must be greater than 0 seconds, got {interval!r}")
        self.interval = interval
        self.events = DemoEvents(symbols, seed=seed)

    async def run(
        self, publisher: Publisher, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Publish ``notification`` events until cancelled; never returns.

        The first is due :data:`FIRST_DELAY` seconds after the start, each next one
        a drawn gap later (absolute deadlines; a slow publish delays, never bunches,
        the next). Publishing blocks while the bus is full; exceptions propagate.
        """
        task_status.started()
        due = trio.current_time() + FIRST_DELAY
        while True:
            await trio.sleep_until(due)
            await publisher.publish(Channel.NOTIFICATIONS, self.events.next_event())
            due += self.events.next_gap(self.interval)
            now = trio.current_time()
            if due <= now:  # the publish overran the whole gap: start afresh, never bunch
                due = now + self.events.next_gap(self.interval)
