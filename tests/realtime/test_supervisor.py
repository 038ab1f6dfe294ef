"""A feed that fails is logged, announced and restarted with backoff; the rest goes on."""

from __future__ import annotations

import itertools

import pytest
import trio

from feeds import Publisher
from protocol import Channel, EventData, NotificationData, NotificationType
from realtime._supervisor import supervise


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[Channel, EventData]] = []

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        self.published.append((channel, data))


async def test_failing_feed_is_restarted_with_growing_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []

    async def flaky(publisher: Publisher) -> None:
        starts.append(trio.current_time())
        if len(starts) <= 4:
            raise RuntimeError(f"boom {len(starts)}")
        await trio.sleep_forever()

    recorder = Recorder()
    with trio.move_on_after(100):
        await supervise("flaky", flaky, recorder, initial_backoff=1.0, max_backoff=4.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0, 4.0])
    notes = [data for channel, data in recorder.published if channel is Channel.NOTIFICATIONS]
    assert all(isinstance(note, NotificationData) for note in notes)
    kinds = [note.type for note in notes if isinstance(note, NotificationData)]
    assert kinds == [NotificationType.ERROR, NotificationType.SUCCESS] * 4
    first = notes[0]
    assert isinstance(first, NotificationData)
    assert first.message == "Feed flaky went down (RuntimeError: boom 1); restarting in 1s"
    assert "Feed flaky failed; restarting in 1.0s" in caplog.text
    assert "boom 1" in caplog.text  # with its traceback


async def test_healthy_run_resets_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def fails_after_a_while(publisher: Publisher) -> None:
        starts.append(trio.current_time())
        await trio.sleep(3.0 if len(starts) < 3 else 120.0)
        raise RuntimeError("tired")

    with trio.move_on_after(500):
        await supervise("slow", fails_after_a_while, Recorder(), initial_backoff=1.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 3 s runs then 1 s and 2 s backoff; after a 120 s run the backoff starts over at 1 s.
    assert gaps[:3] == pytest.approx([4.0, 5.0, 121.0])
