"""The price feed on Trio's virtual clock: rates, round-robin, catch-up, cancellation."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import protocol as p
from feeds._market import DEFAULT_TIME_SCALE, MAX_UNIVERSE, WELL_KNOWN, universe
from feeds._prices import (
    _CANCEL_CHECK_EVERY,
    MAX_UPDATES_PER_TICK,
    PriceFeed,
    PriceFeedConfig,
    PriceFeedStatistics,
    run_price_feed,
)


@attrs.define
class Published:
    time: float
    channel: p.Channel
    data: p.EventData
    symbol: str | None


@attrs.define
class Recorder:
    """Stands in for the bus: records every publish; optionally slow, like a full bus."""

    delay: float = 0.0
    #: Delays of the first publishes, before ``delay`` applies.
    first_delays: list[float] = attrs.field(factory=list)
    items: list[Published] = attrs.field(factory=list)
    start: float = attrs.field(factory=trio.current_time)

    async def publish(
        self,
        channel: p.Channel,
        data: p.EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        assert to is None
        assert user is None
        self.items.append(Published(trio.current_time() - self.start, channel, data, symbol))
        delay = self.first_delays.pop(0) if self.first_delays else self.delay
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()

    def symbols(self) -> list[str | None]:
        return [item.symbol for item in self.items]

    def times(self) -> list[float]:
        return [item.time for item in self.items]


async def run_for(seconds: float, publisher: Recorder, config: PriceFeedConfig) -> None:
    with trio.move_on_after(seconds):
        await run_price_feed(publisher, config)


# --- config -------------------------------------------------------------------


def test_default_config() -> None:
    config = PriceFeedConfig()
    assert config.symbols == 16
    assert config.universe() == tuple(s.symbol for s in WELL_KNOWN)
    assert (config.tick_rate, config.updates_per_tick, config.seed) == (1.0, None, None)
    assert config.time_scale == DEFAULT_TIME_SCALE
    assert config.updates_per_second() == 16.0


def test_config_universe() -> None:
    assert PriceFeedConfig(symbols=100).universe() == universe(100)
    explicit = PriceFeedConfig(symbols=["TSLA", "BRK.B", "ZZZ"])  # any sequence becomes a tuple
    assert explicit.symbols == ("TSLA", "BRK.B", "ZZZ")
    assert explicit.universe() == ("TSLA", "BRK.B", "ZZZ")
    assert (
        PriceFeedConfig(symbols=100, tick_rate=10, updates_per_tick=25).updates_per_second() == 250
    )
    assert PriceFeed(explicit).symbols == explicit.universe()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symbols": 0}, "symbols must be between 1"),
        ({"symbols": MAX_UNIVERSE + 1}, "symbols must be between 1"),
        ({"symbols": True}, "symbols must be a count"),
        ({"symbols": "AAPL"}, "not|string"),
        ({"symbols": ()}, "at least one ticker"),
        ({"symbols": ("AAPL", "aapl")}, "invalid ticker 'aapl'"),
        ({"symbols": ("AAPL", "AAPL\n")}, "invalid ticker"),
        ({"symbols": ("AAPL", 3)}, "invalid ticker 3"),
        ({"symbols": ("AAPL", "MSFT", "AAPL")}, "duplicate ticker 'AAPL'"),
        ({"tick_rate": 0}, "tick_rate must be > 0"),
        ({"tick_rate": -1.0}, "tick_rate"),
        ({"tick_rate": math.nan}, "tick_rate"),
        ({"tick_rate": 1e6}, "tick_rate"),
        ({"updates_per_tick": 0}, "updates_per_tick must be None or an int from 1 to 100000"),
        ({"updates_per_tick": MAX_UPDATES_PER_TICK + 1}, "updates_per_tick must be None"),
        ({"updates_per_tick": 2.5}, "updates_per_tick"),
        ({"seed": "x"}, "seed must be None or an int"),
        ({"time_scale": 0}, "time_scale"),
        ({"time_scale": math.inf}, "time_scale"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PriceFeedConfig(**kwargs)


# --- the feed -----------------------------------------------------------------


async def test_default_feed_updates_every_symbol_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    await run_for(9.5, rec, PriceFeedConfig(seed=1))
    symbols = universe(16)
    assert len(rec.items) == 16 * 10
    assert Counter(rec.symbols()) == dict.fromkeys(symbols, 10)
    assert {item.channel for item in rec.items} == {p.Channel.PRICES}
    assert all(isinstance(item.data, p.PriceData) for item in rec.items)
    # One tick a second on the second, never drifting: absolute deadlines.
    assert rec.times() == [pytest.approx(float(t)) for t in range(10) for _ in symbols]
    assert rec.symbols() == list(symbols) * 10


async def test_first_tick_is_the_session_open(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    await run_for(0.5, rec, PriceFeedConfig(symbols=20))
    assert len(rec.items) == 20
    for item in rec.items:
        assert isinstance(item.data, p.PriceData)
        assert (item.data.change, item.data.volume) == (0.0, 0)


@pytest.mark.parametrize(
    ("n", "tick_rate", "per_tick", "seconds"),
    [(10, 4.0, 3, 5), (3, 2.0, 7, 3), (100, 20.0, 25, 2), (5, 0.5, None, 10)],
)
async def test_tick_rate_and_round_robin(
    autojump_clock: trio.testing.MockClock,
    n: int,
    tick_rate: float,
    per_tick: int | None,
    seconds: int,
) -> None:
    rec = Recorder()
    config = PriceFeedConfig(symbols=n, tick_rate=tick_rate, updates_per_tick=per_tick, seed=3)
    interval = 1 / tick_rate
    await run_for(seconds - interval / 2, rec, config)
    ticks = round(seconds * tick_rate)
    m = per_tick or n
    assert len(rec.items) == ticks * m
    # The universe in order, wrapping, with no symbol skipped or favoured.
    symbols = universe(n)
    assert rec.symbols() == [symbols[i % n] for i in range(ticks * m)]
    counts = Counter(rec.symbols())
    assert set(counts) == set(symbols)
    assert max(counts.values()) - min(counts.values()) <= 1
    expected = [pytest.approx(k * interval) for k in range(ticks) for _ in range(m)]
    assert rec.times() == expected


async def test_each_symbol_moves_by_its_own_elapsed_time(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = PriceFeed(PriceFeedConfig(symbols=4, tick_rate=2.0, updates_per_tick=1, seed=1))
    steps: list[tuple[str, float]] = []
    real_step = feed.market.step

    def spy(symbol: str, dt: float) -> p.PriceData:
        steps.append((symbol, dt))
        return real_step(symbol, dt)

    monkeypatch.setattr(feed.market, "step", spy)
    with trio.move_on_after(5.9):
        await feed.run(Recorder())
    # Everyone opens at the feed's start; after the first round each waits 4 ticks.
    assert [dt for _, dt in steps[:4]] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert [dt for _, dt in steps[4:]] == pytest.approx([2.0] * (len(steps) - 4))
    assert len(steps) == 12


async def test_a_long_tick_stops_when_cancelled() -> None:
    # The in-process bus's publish is not a checkpoint: the tick itself must check.
    published = 0

    class NoCheckpoint:
        async def publish(self, channel: p.Channel, data: p.EventData, **_: Any) -> None:
            nonlocal published
            published += 1
            scope.cancel()

    feed = PriceFeed(PriceFeedConfig(symbols=10, updates_per_tick=MAX_UPDATES_PER_TICK))
    with trio.CancelScope() as scope:
        await feed.run(NoCheckpoint())
    assert published == _CANCEL_CHECK_EVERY - 1


async def test_a_feed_continues_from_another_s_last_prices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = PriceFeed(PriceFeedConfig(symbols=("AAPL", "MSFT"), seed=1))
    with trio.move_on_after(30.5):
        await before.run(Recorder())
    last = {"AAPL": before.market.last("AAPL"), "TSLA": before.market.last("AAPL")}
    after = PriceFeed(PriceFeedConfig(symbols=("AAPL", "MSFT"), seed=2))
    assert after.continue_from(last) == 1  # TSLA is not in its universe
    rec = Recorder()
    with trio.move_on_after(0.5):
        await after.run(rec)
    # The first tick re-quotes: AAPL goes on from the other feed's price and volume,
    # MSFT, not given, from this feed's own open.
    aapl, msft = (item.data for item in rec.items)
    assert isinstance(aapl, p.PriceData)
    assert isinstance(msft, p.PriceData)
    assert (aapl.price, aapl.volume, aapl.change) == (
        last["AAPL"].price,
        last["AAPL"].volume,
        last["AAPL"].change,
    )
    assert last["AAPL"].volume > 0
    assert (msft.price, msft.volume) == (after.market.spec("MSFT").open, 0)


async def test_a_running_feed_cannot_continue_from_other_prices() -> None:
    feed = PriceFeed(PriceFeedConfig(symbols=("AAPL",)))
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, Recorder())
        with pytest.raises(RuntimeError, match="running"):
            feed.continue_from({"AAPL": feed.market.last("AAPL")})
        nursery.cancel_scope.cancel()


async def test_same_seed_same_feed(autojump_clock: trio.testing.MockClock) -> None:
    config = PriceFeedConfig(symbols=30, tick_rate=5.0, updates_per_tick=7, seed=99)
    runs = []
    for cfg in (config, config, attrs.evolve(config, seed=100), attrs.evolve(config, seed=None)):
        rec = Recorder()
        await run_for(3.9, rec, cfg)
        runs.append([(item.symbol, item.data) for item in rec.items])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0] != runs[3]


async def test_no_drift_when_publishing_takes_part_of_a_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(delay=0.3)
    feed = PriceFeed(PriceFeedConfig(symbols=2, tick_rate=1.0, seed=1))
    with trio.move_on_after(9.9):
        await feed.run(rec)
    # 0.6 s of publishing per 1 s tick: ticks still start on the second.
    assert rec.times()[::2] == [pytest.approx(float(t)) for t in range(10)]
    assert feed.statistics() == PriceFeedStatistics(
        ticks=10, updates=20, skipped_ticks=0, running=False
    )


@pytest.mark.parametrize(
    ("delay", "expected_gap"),
    [(1.5, 1.5), (2.5, 2.5), (7.0, 7.0)],
)
async def test_a_slow_publisher_skips_ticks_instead_of_bursting(
    autojump_clock: trio.testing.MockClock, delay: float, expected_gap: float
) -> None:
    rec = Recorder(delay=delay)
    feed = PriceFeed(PriceFeedConfig(symbols=1, tick_rate=1.0, seed=1))
    with trio.move_on_after(60.0):
        await feed.run(rec)
    times = rec.times()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Back to back at the publisher's pace: never idle while behind, never a burst.
    assert gaps == [pytest.approx(expected_gap)] * len(gaps)
    stats = feed.statistics()
    # Every tick that came due was either run or skipped (the last run ends past 60 s).
    assert stats.ticks == len(times) - 1  # the last publish was cancelled mid-way
    assert stats.ticks + stats.skipped_ticks == pytest.approx(60 - delay, abs=delay + 1)
    assert stats.skipped_ticks > 0


async def test_after_a_stall_the_feed_rejoins_the_schedule_without_a_burst(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(first_delays=[5.0, 5.0])
    feed = PriceFeed(PriceFeedConfig(symbols=1, tick_rate=1.0, seed=1))
    with trio.move_on_after(14.5):
        await feed.run(rec)
    # Stalled 5 s twice: the due tick runs at once, the missed ones are dropped, and
    # when the bus is fast again the feed is back on the grid, not replaying backlog.
    assert rec.times() == pytest.approx([0.0, 5.0, 10.0, 11.0, 12.0, 13.0, 14.0])
    assert feed.statistics().skipped_ticks == 8


async def test_cancel_then_run_again_continues_the_prices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = PriceFeed(PriceFeedConfig(symbols=3, seed=5))
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, rec)
        assert feed.statistics().running
        await trio.sleep(4.5)
        nursery.cancel_scope.cancel()
    assert feed.statistics() == PriceFeedStatistics(
        ticks=5, updates=15, skipped_ticks=0, running=False
    )
    before = feed.market.last("AAPL")
    assert before.volume > 0

    await trio.sleep(100)  # down for a while
    rec2 = Recorder()
    with trio.move_on_after(0.5):
        await feed.run(rec2)
    first = rec2.items[0]
    assert first.symbol == "AAPL"
    assert isinstance(first.data, p.PriceData)
    # Continues from the last price (not the open), and the downtime was market time.
    assert first.data.volume > before.volume
    assert feed.statistics().ticks == 6


async def test_run_price_feed_supports_nursery_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_price_feed, rec, PriceFeedConfig(symbols=2))
        await trio.sleep(2.5)
        nursery.cancel_scope.cancel()
    assert len(rec.items) == 6


async def test_one_run_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    feed = PriceFeed()
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, Recorder())
        with pytest.raises(RuntimeError, match="already running"):
            await feed.run(Recorder())
        nursery.cancel_scope.cancel()


async def test_publisher_errors_propagate(autojump_clock: trio.testing.MockClock) -> None:
    class Broken(Recorder):
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            await super().publish(*args, **kwargs)
            if len(self.items) == 20:
                raise ConnectionError("bus down")

    feed = PriceFeed(PriceFeedConfig(seed=1))
    with pytest.raises(ConnectionError, match="bus down"):
        await feed.run(Broken())
    assert feed.statistics() == PriceFeedStatistics(
        ticks=1, updates=19, skipped_ticks=0, running=False
    )
