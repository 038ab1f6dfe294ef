"""The delivery's policy in-process, on socket pairs, with Trio's MockClock driving
the flush delay, the load meter and the write deadline: when frames share a write,
when they go out alone, and what a socket that stops taking bytes costs."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import orjson
import pytest
import trio
import trio.lowlevel
import trio.testing

from protocol import Channel, Codec, NotificationData, NotificationType, Subscriptions
from realtime._bus import InProcessBus
from realtime._delivery import (
    COALESCE_LOAD,
    LOAD_WINDOW,
    Delivery,
    LoadMeter,
    Outlet,
)
from realtime._hub import Hub
from realtime._outbox import OutboxLimits
from realtime.ws import RequestHead, WebSocketConnection

FLUSH_DELAY = 0.0005
WRITE_TIMEOUT = 10.0
UNIVERSE = ("AAPL", "MSFT")


@attrs.define
class Rig:
    """A delivery with one subscriber of notifications, on a socket pair."""

    delivery: Delivery
    bus: InProcessBus
    outlet: Outlet
    peer: trio.socket.SocketType

    async def publish(self, count: int) -> None:
        """Publish ``count`` notifications without yielding between them."""
        for number in range(count):
            await self.bus.publish(
                Channel.NOTIFICATIONS,
                NotificationData(id=str(number), message="m", type=NotificationType.INFO),
            )

    async def received(self, frames: int) -> list[bytes]:
        """Read exactly ``frames`` frames (text, each under 126 bytes) from the peer."""
        data = b""
        payloads: list[bytes] = []
        while len(payloads) < frames:
            while len(data) < 2 or len(data) < 2 + data[1]:
                data += await self.peer.recv(65536)
            size = 2 + data[1]
            assert data[0] == 0x81  # one unfragmented text frame
            assert data[1] < 126
            payloads.append(data[2:size])
            data = data[size:]
        return payloads


@asynccontextmanager
async def open_rig(
    *,
    flush_delay: float = FLUSH_DELAY,
    meter: LoadMeter | None = None,
    send_buffer: int | None = None,
    timer_resolution: float = 0.0,
    wide_event: int = 2,
) -> AsyncIterator[Rig]:
    """The rig's one subscriber never makes an event wide unless ``wide_event=1``."""
    delivery = Delivery(
        flush_delay=flush_delay,
        write_timeout=WRITE_TIMEOUT,
        clock=trio.current_time,
        meter=meter,
        timer_resolution=timer_resolution,
        wide_event=wide_event,
    )
    hub = Hub(universe=UNIVERSE, clock=trio.current_time, after_fan_out=delivery.fanned_out)
    bus = InProcessBus()
    bus.attach(hub)
    ours, peer = trio.socket.socketpair()
    if send_buffer is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, send_buffer)
    ws = WebSocketConnection(
        trio.SocketStream(ours), RequestHead(method="GET", target="/ws/a", http_version="1.1")
    )
    outlet = Outlet(ws, "a", OutboxLimits(), delivery)
    assert outlet.codec is Codec.JSON
    hub.register(outlet)
    hub.apply(outlet, Subscriptions(10).subscribe(Channel.NOTIFICATIONS, universe=UNIVERSE))
    with peer:
        async with trio.open_nursery() as nursery:
            await nursery.start(delivery.run)
            yield Rig(delivery, bus, outlet, peer)
            nursery.cancel_scope.cancel()
    await ws.aclose()  # the peer is gone: no closing handshake to wait for


# --- the load meter ---------------------------------------------------------------------


def test_the_meter_is_idle_until_a_window_was_busy_enough() -> None:
    meter = LoadMeter(now=0.0)
    assert not meter.loaded
    # 21 ms busy in the first 100 ms window: below a quarter.
    meter.busy(0.01, 0.02)
    meter.busy(0.05, 0.06)
    assert not meter.loaded  # the window is not complete yet
    meter.busy(0.099, 0.10)
    assert not meter.loaded
    # 30 ms busy in the next window: loaded, decided when the window ends.
    meter.busy(0.11, 0.14)
    assert not meter.loaded
    meter.busy(0.199, 0.2)
    assert meter.loaded
    # A quiet window (one tiny burst after a long pause) turns it off again.
    meter.busy(5.0, 5.001)
    assert not meter.loaded


def test_the_meter_judges_the_share_of_the_whole_window() -> None:
    meter = LoadMeter(now=0.0, threshold=0.5, window=1.0)
    meter.busy(0.0, 0.4)
    meter.busy(0.9, 1.0)
    assert meter.loaded  # exactly half of the first second
    meter.busy(1.5, 1.6)
    meter.busy(2.0, 2.3)
    assert not meter.loaded  # 0.4 of 1.3 s


@pytest.mark.parametrize(("threshold", "loaded"), [(0.0, True), (1.5, False)])
def test_a_threshold_can_force_coalescing_on_or_off(threshold: float, loaded: bool) -> None:
    meter = LoadMeter(now=0.0, threshold=threshold)
    assert meter.loaded is (threshold <= 0)
    for start in range(10):
        meter.busy(start * LOAD_WINDOW, (start + 1) * LOAD_WINDOW)
    assert meter.loaded is loaded


def test_the_default_threshold_is_a_quarter_of_the_time() -> None:
    assert (COALESCE_LOAD, LOAD_WINDOW) == (0.25, 0.1)


# --- the policy, under MockClock -------------------------------------------------------


async def test_a_burst_shares_one_write_on_an_idle_gateway(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_rig() as rig:
        assert not rig.delivery.meter.loaded
        await rig.publish(10)
        assert rig.delivery.writes == 0  # nothing is written before the publisher yields
        await trio.testing.wait_all_tasks_blocked()
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (1, 10)
        assert [orjson_id(p) for p in await rig.received(10)] == [str(n) for n in range(10)]


async def test_a_burst_that_goes_on_is_written_once_it_is_flush_delay_old(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_rig() as rig:
        await rig.publish(3)
        mock_clock.jump(FLUSH_DELAY / 2)
        await rig.publish(3)
        assert rig.delivery.writes == 0
        mock_clock.jump(FLUSH_DELAY / 2)
        await rig.publish(1)  # the event that takes the burst to the flush delay
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (1, 7)
        await rig.publish(2)  # a new burst, written once the publisher yields
        assert rig.delivery.writes == 1
        await trio.testing.wait_all_tasks_blocked()
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (2, 9)
        assert len(await rig.received(9)) == 9


async def test_a_wide_event_is_written_right_after_its_fan_out(
    mock_clock: trio.testing.MockClock,
) -> None:
    # With one subscriber, an event is "wide" only for wide_event=1: each of the
    # burst's events is then written before the next is published.
    async with open_rig(wide_event=1) as rig:
        await rig.publish(3)
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (3, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.delivery.writes == 3
        assert [orjson_id(p) for p in await rig.received(3)] == ["0", "1", "2"]


async def test_an_event_is_wide_by_the_outlets_it_alone_made_pending(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_rig(wide_event=2) as rig:
        # A second outlet on the same socket: only the count of writes matters here.
        second = Outlet(rig.outlet.ws, "b", OutboxLimits(), rig.delivery)
        frame = b"\x81\x01x"
        assert rig.outlet.offer(frame)
        rig.delivery.fanned_out()  # one outlet made pending
        for outlet in (rig.outlet, second):
            assert outlet.offer(frame)
        rig.delivery.fanned_out()  # two pending now, but only one of them new
        assert rig.delivery.writes == 0
        await trio.testing.wait_all_tasks_blocked()
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (2, 3)
        for outlet in (rig.outlet, second):
            assert outlet.offer(frame)
        rig.delivery.fanned_out()  # two made pending by this event alone: wide
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (4, 5)


async def test_idle_bursts_apart_are_written_apart(mock_clock: trio.testing.MockClock) -> None:
    # Below the load threshold nothing waits for the flush delay: each burst is
    # written as soon as its publisher yields, even with no time between them.
    async with open_rig() as rig:
        for _ in range(5):
            await rig.publish(1)
            await trio.testing.wait_all_tasks_blocked()
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (5, 5)
        assert len(await rig.received(5)) == 5


async def test_under_load_bursts_within_the_flush_delay_share_a_write(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_rig(meter=LoadMeter(now=0.0, threshold=0.0)) as rig:
        await rig.publish(3)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.delivery.writes == 1  # the first burst: nothing written recently
        for _ in range(4):  # four more bursts, no time passing: they wait together
            await rig.publish(2)
            await trio.testing.wait_all_tasks_blocked()
        assert rig.delivery.writes == 1
        mock_clock.jump(FLUSH_DELAY / 2)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.delivery.writes == 1
        mock_clock.jump(FLUSH_DELAY / 2)
        await trio.testing.wait_all_tasks_blocked()
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (2, 11)
        assert [orjson_id(p) for p in await rig.received(11)] == [
            "0", "1", "2", "0", "1", "0", "1", "0", "1", "0", "1",
        ]  # fmt: skip


async def test_each_flush_observes_how_long_its_oldest_frame_waited(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_rig() as rig:
        latency = rig.delivery.latency
        await rig.publish(3)
        await trio.testing.wait_all_tasks_blocked()
        assert (sum(latency.counts), latency.total) == (1, 0.0)  # written as it yielded
        await rig.publish(3)
        mock_clock.jump(FLUSH_DELAY)
        await rig.publish(1)  # takes the burst to the flush delay: written now
        assert sum(latency.counts) == 2
        assert latency.total == pytest.approx(FLUSH_DELAY)
    # Under load, frames wait out the flush delay in the later queue: counted from
    # when they were offered, once per flush, however many bursts it carried.
    async with open_rig(meter=LoadMeter(now=0.0, threshold=0.0)) as rig:
        latency = rig.delivery.latency
        await rig.publish(1)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            await rig.publish(2)
            await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(FLUSH_DELAY)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.delivery.writes == 2
        assert sum(latency.counts) == 2
        assert latency.total == pytest.approx(FLUSH_DELAY)
        assert latency.cumulative()[-1] == ("+Inf", 2)


async def test_a_wait_shorter_than_the_timer_can_keep_is_not_waited(
    mock_clock: trio.testing.MockClock,
) -> None:
    # epoll counts milliseconds: a 0.5 ms wait for the flush delay would last 1 ms. So
    # once the publisher yields, what is due within the timer's resolution goes now.
    forced = LoadMeter(now=0.0, threshold=0.0)
    async with open_rig(meter=forced, timer_resolution=0.001) as rig:
        await rig.publish(3)
        await trio.testing.wait_all_tasks_blocked()
        await rig.publish(2)  # written 0 s ago: it would wait the flush delay
        await trio.testing.wait_all_tasks_blocked()
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (2, 5)


async def test_with_no_flush_delay_every_event_is_its_own_write(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_rig(flush_delay=0.0, meter=LoadMeter(now=0.0, threshold=0.0)) as rig:
        await rig.publish(10)
        # Written in the publisher's task, before it yields.
        assert (rig.delivery.writes, rig.delivery.messages_sent) == (10, 10)
        assert len(await rig.received(10)) == 10


async def test_a_full_socket_goes_to_a_writer_which_hands_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_rig(send_buffer=4096) as rig:
        for _ in range(10):  # fill the socket pair's buffers: a writer takes over
            await rig.publish(100)
            await trio.lowlevel.checkpoint()
        assert rig.delivery.blocked_writes >= 1
        assert rig.delivery.writers == 1
        assert rig.outlet.close_code is None  # the outbox holds what the socket did not take
        received = [orjson_id(p) for p in await rig.received(1000)]
        assert received == [str(n) for _ in range(10) for n in range(100)]
        while rig.delivery.writers:
            await trio.sleep(0.001)
        await rig.publish(1)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.delivery.writers == 0  # written directly again
        assert len(await rig.received(1)) == 1
        assert rig.delivery.messages_sent == 1001


async def test_a_write_past_its_deadline_aborts_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_rig(send_buffer=4096) as rig:
        started = trio.current_time()
        with trio.fail_after(WRITE_TIMEOUT * 2), rig.outlet.read_scope:
            for _ in range(10):  # the peer never reads
                await rig.publish(100)
                await trio.lowlevel.checkpoint()
            await trio.sleep_forever()  # until the delivery ends the connection
        assert rig.outlet.read_scope.cancelled_caught
        assert rig.outlet.ws.closed
        assert rig.delivery.write_timeouts == 1
        assert rig.outlet.aborted == "a write took longer than the write deadline (10 s)"
        assert trio.current_time() - started >= WRITE_TIMEOUT


def orjson_id(payload: bytes) -> str:
    value = orjson.loads(payload)["data"]["id"]
    assert isinstance(value, str)
    return value
