"""The demo's system notifications on Trio's virtual clock, and every dashboard panel
having something within a minute of the demo's start."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

import protocol as p
from feeds import DemoEvents, DemoEventsFeed, universe
from feeds._events import FIRST_DELAY
from realtime import Config
from realtime._server import build_feeds

from .doubles import Recorder

SYMBOLS = universe(16)


async def _run_for(seconds: float, feed: DemoEventsFeed, recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, recorder)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("seed", range(5))
async def test_a_virtual_minute_of_demo_events(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    recorder = Recorder()
    start = trio.current_time()
    await _run_for(60, DemoEventsFeed(SYMBOLS, seed=seed), recorder)
    events = recorder.on(p.Channel.NOTIFICATIONS)
    times = [item.time - start for item in events]
    notes = [item.data for item in events]
    assert all(isinstance(note, p.NotificationData) for note in notes)
    assert times[0] == pytest.approx(FIRST_DELAY)
    # One every 15 s on average, each gap between 7.5 and 22.5 s: 3 to 7 in a minute.
    assert 3 <= len(events) <= 7
    for before, after in itertools.pairwise(times):
        assert 7.5 <= after - before <= 22.5
    kinds = [note.type for note in notes if isinstance(note, p.NotificationData)]
    assert kinds[:3] == [
        p.NotificationType.SUCCESS,
        p.NotificationType.INFO,
        p.NotificationType.WARNING,
    ]
    assert p.NotificationType.ERROR not in kinds  # errors are the supervisor's
    first = notes[0]
    assert isinstance(first, p.NotificationData)
    assert first.message.startswith("Model training completed: ")
    ids = [note.id for note in notes if isinstance(note, p.NotificationData)]
    assert len(set(ids)) == len(ids)


def test_a_seed_fixes_the_messages() -> None:
    def messages(seed: int) -> list[str]:
        events = DemoEvents(SYMBOLS, seed=seed)
        return [events.next_event().message for _ in range(20)]

    assert messages(3) == messages(3)
    assert messages(3) != messages(4)
    assert DemoEvents(SYMBOLS, seed=1).next_event().type is p.NotificationType.SUCCESS


def test_every_message_names_things_of_the_universe() -> None:
    events = DemoEvents(("AAPL", "MSFT"), seed=0)
    texts = [events.next_event().message for _ in range(200)]
    assert any("bought" in text and "AAPL" in text for text in texts)
    assert any(text.startswith("Market data delayed: ") for text in texts)
    lone = DemoEvents(("KO",), seed=0)
    assert all(lone.next_event().message for _ in range(50))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one symbol"):
        DemoEvents(())
    with pytest.raises(ValueError, match="event interval must be greater than 0 seconds"):
        DemoEventsFeed(SYMBOLS, interval=0)


@pytest.mark.parametrize("seed", range(1, 6))
async def test_every_panel_has_something_within_a_minute(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """The default demo (`make run`): prices, alerts, signals, the portfolio and
    notifications all publish within a virtual minute, whatever the seed."""
    recorder = Recorder()
    feeds = build_feeds(Config(seed=seed), recorder)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for name, run in feeds.supervised():
            await nursery.start(run, feeds.tap if name == "prices" else recorder)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    first = {
        channel: min((item.time - start for item in recorder.on(channel)), default=None)
        for channel in p.Channel
    }
    assert all(when is not None and when < 60 for when in first.values()), first
