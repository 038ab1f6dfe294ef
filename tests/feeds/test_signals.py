"""The signal agent: actions and confidence from its numbers, reasoning that states them,
and the feed's rate limit on Trio's virtual clock."""

from __future__ import annotations

import itertools
import re

import pytest
import trio
import trio.testing

import protocol as p
from feeds import PriceFeed, PriceFeedConfig, PriceTap, SignalAgent, SignalFeed
from feeds._signals import GAP_SCALE, MIN_SAMPLES, MOMENTUM_SCALE

from .doubles import Recorder


def _agent(prices: dict[str, list[float]]) -> SignalAgent:
    agent = SignalAgent()
    for symbol, series in prices.items():
        for price in series:
            agent.observe(symbol, price)
    return agent


_NUMBERS = re.compile(
    r"^(?P<sym>\S+): the (?P<fn>\d+)-tick average \$(?P<fast>[\d,.]+) is (?P<gap>[\d.]+)% "
    r"(?P<trend>above|below|level with) the (?P<sn>\d+)-tick average \$(?P<slow>[\d,.]+)"
    r"(?P<crossed>, having crossed (above|below) it since the last signal)?, and the price "
    r"(?P<moved>rose|fell|was unchanged) (?P<mom>[\d.]+)% over the last (?P<back>\d+) ticks "
    r"to \$(?P<now>[\d,.]+); (?P<action>buy|sell|hold) with confidence (?P<conf>[\d.]+)\.$"
)


@pytest.mark.parametrize(
    ("series", "action"),
    [
        ([100, 100, 100, 100, 100, 101, 102, 103], p.SignalAction.BUY),
        ([100, 100, 100, 100, 100, 99, 98, 97], p.SignalAction.SELL),
        ([100, 100, 100, 100, 100, 100], p.SignalAction.HOLD),
        ([100, 100, 110, 100, 100, 105, 104, 103], p.SignalAction.HOLD),  # up trend, down momentum
    ],
)
def test_reasoning_states_the_numbers_that_drove_the_signal(
    series: list[float], action: p.SignalAction
) -> None:
    signal = _agent({"AAPL": series}).evaluate("AAPL")
    assert signal is not None
    assert signal.action is action
    match = _NUMBERS.match(signal.reasoning)
    assert match is not None, signal.reasoning
    held = series[-10:]
    fast = sum(held[-3:]) / 3
    slow = sum(held) / len(held)
    gap = (fast - slow) / slow * 100
    back = min(5, len(held) - 1)
    momentum = (held[-1] - held[-1 - back]) / held[-1 - back] * 100
    assert match["sym"] == "AAPL"
    assert (int(match["fn"]), int(match["sn"]), int(match["back"])) == (3, len(held), back)
    assert match["fast"] == f"{fast:,.2f}"
    assert match["slow"] == f"{slow:,.2f}"
    assert match["gap"] == f"{abs(gap):.2f}"
    assert match["mom"] == f"{abs(momentum):.2f}"
    assert match["now"] == f"{held[-1]:,.2f}"
    assert match["action"] == action.value
    g, m = min(1, abs(gap) / GAP_SCALE), min(1, abs(momentum) / MOMENTUM_SCALE)
    expected = 0.5 * (1 - g) + 0.5 * (1 - m) if action is p.SignalAction.HOLD else 0.5 * (g + m)
    assert signal.confidence == round(expected, 2)
    assert match["conf"] == f"{expected:.2f}"
    assert 0 <= signal.confidence <= 1


def test_no_signal_before_enough_prices() -> None:
    agent = _agent({"AAPL": [100.0] * (MIN_SAMPLES - 1)})
    assert agent.evaluate("AAPL") is None
    assert agent.next_signal() is None
    assert agent.evaluate("NOPE") is None


def test_next_signal_prefers_changes_then_goes_round_robin() -> None:
    agent = _agent({s: [100.0] * 6 for s in ("A", "B", "C")})
    picks = [agent.next_signal() for _ in range(4)]
    assert [s.symbol for s in picks if s] == ["A", "B", "C", "A"]
    for price in (101.0, 102.0, 103.0):
        agent.observe("C", price)  # C turns to buy: it goes first
    signal = agent.next_signal()
    assert signal is not None
    assert (signal.symbol, signal.action) == ("C", p.SignalAction.BUY)
    for price in (101.0, 100.0, 99.0, 98.0, 97.0, 96.0):
        agent.observe("C", price)  # the fast average crosses below the slow one
    signal = agent.next_signal()
    assert signal is not None
    assert signal.action is p.SignalAction.SELL
    assert ", having crossed below it since the last signal," in signal.reasoning


async def test_feed_is_rate_limited_and_deterministic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def run_once() -> list[tuple[float, p.EventData]]:
        # Ticks every 0.125 s, signals every 2.3 s from 0.01 s later: never at the same
        # virtual instant as a tick, where the order of the two tasks is Trio's choice.
        prices = PriceFeed(PriceFeedConfig(symbols=4, tick_rate=8.0, seed=5))
        recorder = Recorder()
        tap = PriceTap(recorder)
        signals = SignalFeed(tap, interval=2.3)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(prices.run, tap)
            await trio.sleep(0.01)
            start = trio.current_time()
            await nursery.start(signals.run, recorder)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        return [(round(item.time - start, 6), item.data) for item in recorder.on(p.Channel.SIGNALS)]

    first = await run_once()
    assert first == await run_once()  # a seed determines every signal
    times = [t for t, _ in first]
    assert times[0] == pytest.approx(2.3)
    assert len(first) == 26
    assert all(later - earlier >= 2.3 - 1e-9 for earlier, later in itertools.pairwise(times))
    assert {s.symbol for _, s in first if isinstance(s, p.SignalData)} == {
        "AAPL",
        "MSFT",
        "GOOG",
        "AMZN",
    }


async def test_first_signal_comes_as_soon_as_there_is_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One tick a second: MIN_SAMPLES prices take ~4 s, more than the 3 s interval.
    prices = PriceFeed(PriceFeedConfig(symbols=1, tick_rate=1.0, seed=1))
    recorder = Recorder()
    tap = PriceTap(recorder)
    signals = SignalFeed(tap, interval=3.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(signals.run, recorder)
        await nursery.start(prices.run, tap)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    times = [item.time - start for item in recorder.on(p.Channel.SIGNALS)]
    assert times[0] <= MIN_SAMPLES  # not a whole interval after the data was there
    assert times[1] - times[0] == pytest.approx(3.0)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="signal interval must be greater than 0"):
        SignalFeed(PriceTap(Recorder()), interval=0)
