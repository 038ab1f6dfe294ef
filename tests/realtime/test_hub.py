"""The hub and outboxes without sockets: registry, prepared frames, conflation, overflow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from protocol import (
    ALL_SYMBOLS,
    Channel,
    Codec,
    ErrorCode,
    NotificationData,
    NotificationType,
    PriceData,
    PriceUpdate,
    RemoteProtocolError,
    Subscriptions,
    decode_server,
)
from realtime._hub import ClientIdTaken, Event, Hub
from realtime._outbox import Outbox, OutboxLimits

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
UNIVERSE = ("AAPL", "MSFT", "GOOG")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def price(symbol: str, value: float = 100.0) -> Event:
    data = PriceData(
        price=value, change=0, change_pct=0, volume=1, bid=value - 0.01, ask=value + 0.01
    )
    return Event(Channel.PRICES, data, NOW, symbol=symbol)


def note(number: int, to: str | None = None, user: str | None = None) -> Event:
    data = NotificationData(id=str(number), message=f"note {number}", type=NotificationType.INFO)
    return Event(Channel.NOTIFICATIONS, data, NOW, to=to, user=user)


def payload(frame: bytes) -> bytes:
    length = frame[1] & 0x7F
    return frame[2 if length < 126 else 4 if length == 126 else 10 :]


def frame_payload(frame: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(payload(frame))
    return decoded


def subscribe(
    hub: Hub,
    outbox: Outbox,
    state: Subscriptions,
    channel: Channel,
    symbols: list[str] | None = None,
) -> None:
    hub.apply(outbox, state.subscribe(channel, symbols, universe=hub.universe))


@pytest.fixture
def hub() -> Hub:
    return Hub(universe=UNIVERSE, clock=FakeClock(), history_messages=5, history_seconds=60)


def test_fan_out_shares_one_frame_per_codec(hub: Hub) -> None:
    outboxes = [Outbox(f"c{i}", Codec.JSON, OutboxLimits()) for i in range(3)]
    packed = Outbox("packed", Codec.MSGPACK, OutboxLimits())
    for outbox in [*outboxes, packed]:
        hub.register(outbox)
        subscribe(hub, outbox, Subscriptions(10), Channel.PRICES, ["AAPL"])
    hub.publish(price("AAPL"))
    frames = [outbox.take() for outbox in outboxes]
    assert all(f[0] is frames[0][0] for f in frames)  # the very same bytes object
    assert frame_payload(frames[0][0])["symbol"] == "AAPL"
    (binary,) = packed.take()
    assert binary[0] == 0x82  # a binary frame
    message = decode_server(payload(binary), Codec.MSGPACK)
    assert isinstance(message, PriceUpdate)
    assert message.seq == 1


def test_prices_conflate_per_symbol_and_keep_their_place(hub: Hub) -> None:
    outbox = Outbox("c", Codec.JSON, OutboxLimits(max_messages=2))
    hub.register(outbox)
    subscribe(hub, outbox, Subscriptions(10), Channel.PRICES)
    for value in range(100):
        hub.publish(price("AAPL", 100 + value))
        hub.publish(price("MSFT", 200 + value))
    assert hub.conflated == 2 * 99
    frames = outbox.take()
    assert [frame_payload(f)["symbol"] for f in frames] == ["AAPL", "MSFT"]
    assert frame_payload(frames[0])["seq"] == 100
    assert outbox.close_code is None  # prices never overflow the outbox


@pytest.mark.parametrize(
    ("dropped", "kept"),
    [(["AAPL"], ["MSFT", "GOOG"]), (None, []), (["IBM"], ["AAPL", "MSFT", "GOOG"])],
)
def test_an_unsubscribe_drops_the_pending_prices_it_covers(
    hub: Hub, dropped: list[str] | None, kept: list[str]
) -> None:
    outbox = Outbox("c", Codec.JSON, OutboxLimits())
    hub.register(outbox)
    subscribe(hub, outbox, Subscriptions(10), Channel.PRICES)
    for symbol in UNIVERSE:
        hub.publish(price(symbol))
    outbox.drop_prices(dropped)
    assert [frame_payload(f)["symbol"] for f in outbox.take()] == kept


def test_fifo_overflow_closes_with_4499_and_frees_the_queue(hub: Hub) -> None:
    slow = Outbox("slow", Codec.JSON, OutboxLimits(max_messages=3))
    fast = Outbox("fast", Codec.JSON, OutboxLimits(max_messages=3))
    for outbox in (slow, fast):
        hub.register(outbox)
        subscribe(hub, outbox, Subscriptions(10), Channel.NOTIFICATIONS)
    for number in range(3):
        hub.publish(note(number))
    fast.take()
    hub.publish(note(3))
    assert slow.close_code == 4499
    assert slow.depth == 0
    assert hub.slow_consumer_closes == 1
    assert fast.depth == 1
    hub.publish(note(4))  # a closed outbox takes nothing more
    assert slow.depth == 0
    assert hub.slow_consumer_closes == 1


def test_byte_bound_also_overflows() -> None:
    outbox = Outbox("c", Codec.JSON, OutboxLimits(max_messages=100, max_bytes=250))
    assert outbox.offer(b"x" * 200)
    assert not outbox.offer(b"x" * 100)
    assert outbox.close_code == 4499


def test_registry_follows_subscription_changes(hub: Hub) -> None:
    outbox = Outbox("c", Codec.JSON, OutboxLimits())
    state = Subscriptions(10)
    hub.register(outbox)
    subscribe(hub, outbox, state, Channel.PRICES, ["AAPL", "MSFT"])
    assert hub.statistics().symbol_subscriptions == {"AAPL": 1, "MSFT": 1}
    subscribe(hub, outbox, state, Channel.PRICES)
    assert state.get(Channel.PRICES) is ALL_SYMBOLS
    assert hub.statistics().symbol_subscriptions == {"AAPL": 1, "GOOG": 1, "MSFT": 1}
    hub.publish(price("GOOG"))
    assert len(outbox.take()) == 1
    hub.unregister(outbox, [state.unsubscribe(c) for c, _ in state])
    stats = hub.statistics()
    assert stats.total_connections == 0
    assert stats.symbol_subscriptions == {}
    assert stats.channel_subscriptions["prices"] == 0


def test_newer_connection_with_the_same_id_closes_the_older(hub: Hub) -> None:
    older, newer = (
        Outbox("same", Codec.JSON, OutboxLimits()),
        Outbox("same", Codec.JSON, OutboxLimits()),
    )
    hub.register(older)
    assert hub.register(newer) is older
    assert older.close_code == 4409
    hub.unregister(older, [])  # the older one leaving does not drop the newer one
    assert hub.statistics().clients == ("same",)


def test_clients_page_in_id_order(hub: Hub) -> None:
    outboxes = {name: Outbox(name, Codec.JSON, OutboxLimits()) for name in ("c", "a", "b", "d")}
    for outbox in outboxes.values():
        hub.register(outbox)
    hub.register(Outbox("b", Codec.JSON, OutboxLimits()))  # replaces b: listed once
    page, more = hub.clients_page(2)
    assert [o.client_id for o in page] == ["a", "b"]
    assert more
    page, more = hub.clients_page(2, after="b")
    assert [o.client_id for o in page] == ["c", "d"]
    assert not more
    assert [o.client_id for o in hub.clients_page(10, after="bb")[0]] == ["c", "d"]
    assert hub.clients_page(0) == ([], True)
    hub.unregister(outboxes["c"], [])
    assert [o.client_id for o in hub.clients_page(10)[0]] == ["a", "b", "d"]
    assert hub.statistics().clients == ("a", "b", "d")


def test_snapshot_sends_the_last_price(hub: Hub) -> None:
    hub.publish(price("AAPL", 101))
    hub.publish(price("AAPL", 102))
    outbox = Outbox("late", Codec.JSON, OutboxLimits())
    hub.offer_snapshot(outbox, ["AAPL", "MSFT"])
    (frame,) = outbox.take()
    assert frame_payload(frame)["data"]["price"] == 102


def test_position_is_the_last_seq_numbered_on_the_channel(hub: Hub) -> None:
    assert hub.position(Channel.NOTIFICATIONS) == 0
    for number in range(1, 4):
        hub.publish(note(number))
    hub.publish(note(4, to="alice"))  # numbered in the channel's stream like any other
    assert hub.position(Channel.NOTIFICATIONS) == 4
    assert hub.position(Channel.ALERTS) == 0
    assert (
        hub.replay(Channel.NOTIFICATIONS, hub.position(Channel.NOTIFICATIONS), hub.epoch, "c") == []
    )


def test_replay_in_order_within_the_window(hub: Hub) -> None:
    clock = hub._clock
    assert isinstance(clock, FakeClock)
    for number in range(1, 8):
        hub.publish(note(number))  # seq 1..7; the history keeps the last 5 (3..7)
    replay = hub.replay(Channel.NOTIFICATIONS, 4, hub.epoch, "c")
    assert [f.message.seq for f in replay] == [5, 6, 7]
    assert hub.replay(Channel.NOTIFICATIONS, 7, hub.epoch, "c") == []
    for since in (1, 8):  # too old, or from the future
        with pytest.raises(RemoteProtocolError) as info:
            hub.replay(Channel.NOTIFICATIONS, since, hub.epoch, "c")
        assert info.value.code is ErrorCode.HISTORY_UNAVAILABLE
    with pytest.raises(RemoteProtocolError, match="epoch"):
        hub.replay(Channel.NOTIFICATIONS, 5, "another-epoch", "c")
    clock.now = 61.0  # everything aged out
    with pytest.raises(RemoteProtocolError):
        hub.replay(Channel.NOTIFICATIONS, 5, hub.epoch, "c")


def test_targeted_events_reach_only_their_client(hub: Hub) -> None:
    alice, bob = (
        Outbox("alice", Codec.JSON, OutboxLimits()),
        Outbox("bob", Codec.JSON, OutboxLimits()),
    )
    for outbox in (alice, bob):
        hub.register(outbox)
        subscribe(hub, outbox, Subscriptions(10), Channel.NOTIFICATIONS)
    hub.publish(note(1, to="alice"))
    assert alice.depth == 1
    assert bob.depth == 0
    assert [f.message.seq for f in hub.replay(Channel.NOTIFICATIONS, 0, hub.epoch, "bob")] == []


def connection(hub: Hub, client_id: str, user: str | None, *channels: Channel) -> Outbox:
    outbox = Outbox(client_id, Codec.JSON, OutboxLimits(), user=user)
    hub.register(outbox)
    state = Subscriptions(10)
    for channel in channels:
        subscribe(hub, outbox, state, channel)
    return outbox


def seqs(outbox: Outbox) -> list[int]:
    return [frame_payload(frame)["seq"] for frame in outbox.take()]


def test_a_user_s_events_reach_every_connection_of_that_user_and_no_other() -> None:
    hub = Hub(universe=UNIVERSE, clock=FakeClock(), history_messages=100)
    alice_1 = connection(hub, "a1", "alice", Channel.NOTIFICATIONS)
    alice_2 = connection(hub, "a2", "alice", Channel.NOTIFICATIONS)
    alice_3 = connection(hub, "a3", "alice")  # not subscribed: nothing for it
    bob = connection(hub, "b1", "bob", Channel.NOTIFICATIONS)
    nobody = connection(hub, "n1", None, Channel.NOTIFICATIONS)
    hub.publish(note(1, user="alice"))
    hub.publish(note(2))
    hub.publish(note(3, user="bob"))
    hub.publish(note(4, to="a2", user="alice"))
    hub.publish(note(5, to="a2", user="bob"))  # a2 is not bob's: nobody gets it
    hub.publish(note(6, user="carol"))  # not connected
    assert seqs(alice_1) == [1, 2]
    assert seqs(alice_2) == [1, 2, 4]
    assert seqs(alice_3) == []
    assert seqs(bob) == [2, 3]
    assert seqs(nobody) == [2]
    for outbox, expected in ((alice_1, [1, 2]), (alice_2, [1, 2, 4]), (bob, [2, 3])):
        replay = hub.replay(Channel.NOTIFICATIONS, 0, hub.epoch, outbox.client_id, outbox.user)
        assert [f.message.seq for f in replay] == expected
    # A connection of nobody, with another user's client id, replays nothing of theirs.
    assert [f.message.seq for f in hub.replay(Channel.NOTIFICATIONS, 0, hub.epoch, "a2")] == [2]


def test_a_user_s_prices_reach_that_user_only(hub: Hub) -> None:
    alice = connection(hub, "a1", "alice", Channel.PRICES)
    bob = Outbox("b1", Codec.JSON, OutboxLimits(), user="bob")
    hub.register(bob)
    subscribe(hub, bob, Subscriptions(10), Channel.PRICES, ["AAPL"])
    event = price("AAPL")
    hub.publish(Event(event.channel, event.data, NOW, symbol="AAPL", user="bob"))
    assert alice.depth == 0
    assert [frame_payload(f)["symbol"] for f in bob.take()] == ["AAPL"]


def test_a_client_id_is_held_by_one_user_at_a_time(hub: Hub) -> None:
    alice = connection(hub, "same", "alice", Channel.NOTIFICATIONS)
    with pytest.raises(ClientIdTaken):
        hub.register(Outbox("same", Codec.JSON, OutboxLimits(), user="mallory"))
    assert alice.close_code is None
    assert hub.holder("same") is alice
    assert hub.connection_count_of("mallory") == 0
    # The same user's newer connection replaces the older (4409), and counts once.
    newer = Outbox("same", Codec.JSON, OutboxLimits(), user="alice")
    assert hub.register(newer) is alice
    assert alice.close_code == 4409
    assert hub.connections_of("alice") == [newer]
    hub.unregister(alice, [])
    assert hub.connections_of("alice") == [newer]
    hub.unregister(newer, [])
    assert hub.connection_count_of("alice") == 0
    # Once it is free, another user may take it.
    hub.register(Outbox("same", Codec.JSON, OutboxLimits(), user="mallory"))
    assert hub.connection_count_of("mallory") == 1
