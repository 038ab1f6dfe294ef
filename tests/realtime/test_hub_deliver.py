"""The hub following another bus's numbering (a node of a cluster): deliver, forget,
restart. Without Redis: what the Redis bus hands the hub, handed by hand."""

from __future__ import annotations

import pytest

from protocol import (
    ALL_SYMBOLS,
    Change,
    Channel,
    Codec,
    ErrorCode,
    Notification,
    NotificationData,
    NotificationType,
    PriceData,
    PriceUpdate,
    RemoteProtocolError,
)
from realtime._hub import Hub
from realtime._outbox import Outbox, OutboxLimits

from .test_hub import NOW, UNIVERSE, FakeClock, frame_payload


def numbered_note(seq: int) -> Notification:
    data = NotificationData(id=str(seq), message=f"note {seq}", type=NotificationType.INFO)
    return Notification(data=data, seq=seq, timestamp=NOW)


def numbered_price(symbol: str, seq: int, value: float = 100.0) -> PriceUpdate:
    data = PriceData(price=value, change=0, change_pct=0, volume=1, bid=value, ask=value)
    return PriceUpdate(symbol=symbol, data=data, seq=seq, timestamp=NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(clock: FakeClock) -> Hub:
    return Hub(universe=UNIVERSE, clock=clock, history_messages=5, history_seconds=60)


@pytest.fixture
def outbox(hub: Hub) -> Outbox:
    outbox = Outbox("c", Codec.JSON, OutboxLimits())
    hub.register(outbox)
    for channel in (Channel.NOTIFICATIONS, Channel.PRICES):
        hub.apply(outbox, Change(channel, frozenset(), ALL_SYMBOLS))
    return outbox


def test_delivered_messages_keep_their_seq_in_fan_out_history_and_last_prices(
    hub: Hub, outbox: Outbox, clock: FakeClock
) -> None:
    for seq in (41, 42, 43):
        hub.deliver(numbered_note(seq), at=clock())
    hub.deliver(numbered_price("AAPL", 7, 150.0), at=clock())
    sent = [frame_payload(frame) for frame in outbox.take()]
    assert [(m["type"], m["seq"]) for m in sent] == [
        ("notification", 41),
        ("notification", 42),
        ("notification", 43),
        ("price_update", 7),
    ]
    replay = hub.replay(Channel.NOTIFICATIONS, 41, hub.epoch, "c")
    assert [frames.message.seq for frames in replay] == [42, 43]
    last = hub.last_price("AAPL")
    assert last is not None
    assert (last.seq, last.data.price) == (7, 150.0)
    assert hub.published == 4


def test_delivered_messages_age_from_when_they_were_published(hub: Hub, clock: FakeClock) -> None:
    clock.now = 100.0
    hub.deliver(numbered_note(1), at=30.0)  # 70 s old: past the 60 s window
    hub.deliver(numbered_note(2), at=95.0)
    assert [f.message.seq for f in hub.replay(Channel.NOTIFICATIONS, 1, hub.epoch, "c")] == [2]
    with pytest.raises(RemoteProtocolError):
        hub.replay(Channel.NOTIFICATIONS, 0, hub.epoch, "c")


def test_a_forgotten_stretch_refuses_the_resumes_that_would_cross_it(
    hub: Hub, clock: FakeClock
) -> None:
    hub.deliver(numbered_note(1), at=clock())
    hub.forget(Channel.NOTIFICATIONS, 9)
    hub.deliver(numbered_note(10), at=clock())
    with pytest.raises(RemoteProtocolError) as refused:
        hub.replay(Channel.NOTIFICATIONS, 1, hub.epoch, "c")
    assert refused.value.code == ErrorCode.HISTORY_UNAVAILABLE
    assert [f.message.seq for f in hub.replay(Channel.NOTIFICATIONS, 9, hub.epoch, "c")] == [10]
    assert hub.replay(Channel.NOTIFICATIONS, 10, hub.epoch, "c") == []


def test_a_restart_begins_a_new_epoch_and_keeps_the_subscriptions(
    hub: Hub, outbox: Outbox, clock: FakeClock
) -> None:
    hub.deliver(numbered_note(5), at=clock())
    hub.deliver(numbered_price("AAPL", 3), at=clock())
    old = hub.epoch
    hub.restart("new-epoch")
    assert hub.epoch == "new-epoch"
    assert hub.last_price("AAPL") is None
    with pytest.raises(RemoteProtocolError):
        hub.replay(Channel.NOTIFICATIONS, 4, old, "c")
    assert hub.replay(Channel.NOTIFICATIONS, 0, "new-epoch", "c") == []
    outbox.take()
    hub.deliver(numbered_note(1), at=clock())
    assert [frame_payload(f)["seq"] for f in outbox.take()] == [1]


def test_a_targeted_delivery_reaches_only_its_client(hub: Hub, clock: FakeClock) -> None:
    outboxes = {name: Outbox(name, Codec.JSON, OutboxLimits()) for name in ("a", "b")}
    for outbox in outboxes.values():
        hub.register(outbox)
        hub.apply(outbox, Change(Channel.NOTIFICATIONS, frozenset(), ALL_SYMBOLS))
    hub.deliver(numbered_note(1), "b", at=clock())
    assert outboxes["a"].take() == []
    assert [frame_payload(f)["seq"] for f in outboxes["b"].take()] == [1]


def test_a_node_local_notice_has_seq_0_and_stays_out_of_the_numbered_stream(
    hub: Hub, outbox: Outbox, clock: FakeClock
) -> None:
    hub.deliver(numbered_note(7), at=clock())
    warning = NotificationData(id="n", message="interrupted", type=NotificationType.WARNING)
    hub.announce(warning)
    hub.deliver(numbered_note(8), at=clock())
    sent = [frame_payload(frame) for frame in outbox.take()]
    assert [(m["seq"], m["data"]["id"]) for m in sent] == [(7, "7"), (0, "n"), (8, "8")]
    # Not in history, not a position: a resume replays the stream alone.
    assert hub.position(Channel.NOTIFICATIONS) == 8
    replay = hub.replay(Channel.NOTIFICATIONS, 6, hub.epoch, "c")
    assert [frames.message.seq for frames in replay] == [7, 8]


def test_watchers_see_each_registered_connection_come_and_go_once() -> None:
    hub = Hub(universe=UNIVERSE, clock=FakeClock())
    seen: list[tuple[str, Outbox]] = []
    hub.watch_clients(
        lambda outbox: seen.append(("registered", outbox)),
        lambda outbox: seen.append(("unregistered", outbox)),
    )
    older, newer = (Outbox("same", Codec.JSON, OutboxLimits()) for _ in range(2))
    hub.register(older)
    hub.register(newer)  # replaces the older one (4409): it has left the registry
    hub.unregister(older, ())
    hub.unregister(newer, ())
    assert seen == [
        ("registered", older),
        ("registered", newer),
        ("unregistered", newer),
    ]


def test_a_position_awaited_wakes_its_waiter_once_the_channel_reaches_it(hub: Hub) -> None:
    woken: list[str] = []
    hub.notify_at(Channel.NOTIFICATIONS, 2, lambda: woken.append("at 2"))
    hub.notify_at(Channel.NOTIFICATIONS, 3, lambda: woken.append("at 3"))
    hub.notify_at(Channel.ALERTS, 1, lambda: woken.append("alerts"))
    hub.deliver(numbered_note(1), at=0.0)
    assert woken == []
    hub.deliver(numbered_note(2), at=0.0)
    assert woken == ["at 2"]
    hub.deliver(numbered_note(3), at=0.0)
    hub.deliver(numbered_note(4), at=0.0)
    assert woken == ["at 2", "at 3"]  # once each; the other channel is not there yet


def test_a_cancelled_waiter_is_not_woken(hub: Hub) -> None:
    woken: list[int] = []

    def wake() -> None:
        woken.append(1)

    hub.notify_at(Channel.NOTIFICATIONS, 1, wake)
    hub.cancel_notify(Channel.NOTIFICATIONS, wake)
    hub.cancel_notify(Channel.NOTIFICATIONS, wake)  # twice: nothing to forget
    hub.deliver(numbered_note(1), at=0.0)
    assert woken == []


def test_forget_and_restart_wake_the_waiters_they_concern(hub: Hub) -> None:
    woken: list[str] = []
    hub.notify_at(Channel.NOTIFICATIONS, 5, lambda: woken.append("notes"))
    hub.notify_at(Channel.ALERTS, 9, lambda: woken.append("alerts"))
    hub.forget(Channel.NOTIFICATIONS, 6)  # the node skipped to 6: 5 is past
    assert woken == ["notes"]
    hub.restart("another-epoch")  # the position awaited counts in the old epoch
    assert woken == ["notes", "alerts"]
